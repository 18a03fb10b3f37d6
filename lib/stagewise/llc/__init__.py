"""LLC estimation (main paper §3.1, App. A, D.3): the instrument every notebook measures with.

    from stagewise.llc import SGLDConfig, estimate_llc
    result = estimate_llc(loss_fn, params, SGLDConfig(epsilon=1e-3, gamma=100.0), data=(x, y))

* :mod:`stagewise.llc.sampler` — :class:`SGLDConfig`, :func:`estimate_llc` (eq. 8, eq. 26).
* :mod:`stagewise.llc.diagnostics` — per-chain failure flags (Fig. D.7) and the per-estimate
  convergence diagnostic (settle time, drift, chains' agreement; flag ``unconverged``).
* :mod:`stagewise.llc.module` — :func:`estimate_llc_module` for ``nn.Module``/HookedTransformer.
* :mod:`stagewise.llc.sweep` — :func:`estimate_llc_sweep` over checkpoints (cached, resumable,
  serial / processes / Dask).
* :mod:`stagewise.llc.calibration` — the D.3.3 calibration: :func:`sgld_calibration` (ε × nβ grid
  at representative checkpoints + a long chain at the profile's setting), figures D.6-D.7.
"""

from stagewise.llc.diagnostics import ESTIMATE_FLAGS, FLAGS, estimate_convergence
from stagewise.llc.module import estimate_llc_module, module_loss_fn
from stagewise.llc.sampler import (LLCResult, SGLDConfig, default_nbeta, derive_seed, estimate_llc, fast_bf16_support,
                                   resolve_compute_dtype)
from stagewise.llc.sweep import (
    LLCSweep,
    compare_sweeps,
    convergence_summary,
    estimate_llc_sweep,
    flagged_checkpoints,
    sweep_cache_key,
)
from stagewise.llc.calibration import (  # noqa: E402 (after the sweep it builds on)
    CalibrationResult,
    CalibrationSettings,
    SGLDCalibration,
    calibrate_sgld,
    calibration_checkpoints,
    classify_estimate,
    plot_calibration_region,
    plot_calibration_traces,
    plot_llc_traces,
    plot_running_llc,
    save_calibration_figures,
    sgld_calibration,
)

__all__ = [
    "FLAGS",
    "ESTIMATE_FLAGS",
    "estimate_convergence",
    "flagged_checkpoints",
    "convergence_summary",
    "SGLDConfig",
    "LLCResult",
    "estimate_llc",
    "default_nbeta",
    "derive_seed",
    "estimate_llc_module",
    "module_loss_fn",
    "estimate_llc_sweep",
    "sweep_cache_key",
    "compare_sweeps",
    "fast_bf16_support",
    "resolve_compute_dtype",
    "LLCSweep",
    "calibrate_sgld",
    "CalibrationResult",
    "plot_llc_traces",
    "CalibrationSettings",
    "SGLDCalibration",
    "sgld_calibration",
    "calibration_checkpoints",
    "classify_estimate",
    "plot_calibration_traces",
    "plot_calibration_region",
    "plot_running_llc",
    "save_calibration_figures",
]
