"""LLC estimation (main paper §3.1, App. A, D.3): the instrument every notebook measures with.

    from stagewise.llc import SGLDConfig, estimate_llc
    result = estimate_llc(loss_fn, params, SGLDConfig(epsilon=1e-3, gamma=100.0), data=(x, y))

* :mod:`stagewise.llc.sampler` — :class:`SGLDConfig`, :func:`estimate_llc` (eq. 8, eq. 26).
* :mod:`stagewise.llc.diagnostics` — per-chain failure flags (Fig. D.7) and the per-estimate
  convergence diagnostic (settle time, drift, chains' agreement; flag ``unconverged``).
* :mod:`stagewise.llc.module` — :func:`estimate_llc_module` for ``nn.Module``/HookedTransformer.
* :mod:`stagewise.llc.sweep` — :func:`estimate_llc_sweep` over checkpoints (cached, resumable,
  serial / processes / Dask) and :func:`calibrate_sgld` + :func:`plot_llc_traces` (D.3.3).
"""

from stagewise.llc.diagnostics import ESTIMATE_FLAGS, FLAGS, estimate_convergence
from stagewise.llc.module import estimate_llc_module, module_loss_fn
from stagewise.llc.sampler import (LLCResult, SGLDConfig, default_nbeta, derive_seed, estimate_llc, fast_bf16_support,
                                   resolve_compute_dtype)
from stagewise.llc.sweep import (
    CalibrationResult,
    LLCSweep,
    calibrate_sgld,
    compare_sweeps,
    convergence_summary,
    flagged_checkpoints,
    estimate_llc_sweep,
    plot_llc_traces,
    sweep_cache_key,
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
]
