"""LLC over training checkpoints (λ̂(t), main paper Fig. 1) and SGLD calibration grids (App. D.3.3).

One sweep runner for every checkpoint list: results are cached per checkpoint in the artifact cache
(``<cache>/llc/<hash>/result.pt``, keyed by the SGLD config, the checkpoint's weights, the data,
the model factory and the loss), so a killed sweep recomputes only the missing checkpoints, and a
notebook re-run costs nothing. Checkpoints run

* ``executor="serial"``: in this process;
* ``executor="processes"``: in local worker processes (spawned; ``max_workers``, torch threads
  split between them);
* ``executor=<dask.distributed.Client>`` (or any ``concurrent.futures.Executor``): on a cluster,
  with no other change to the calling code. Results come back to the caller, which writes the
  cache, so the workers need no shared file system.

Everything shipped to a worker must pickle: checkpoints as ``(step, state_dict)`` or
``(step, path)``, a top-level ``model_fn()`` returning the module, and a top-level
``loss(forward, batch)`` (see :func:`stagewise.llc.module.module_loss_fn`). ``data`` is a Tensor,
a tuple of Tensors, or a top-level function returning one (built in the worker: large SGLD data
sets need not travel).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact
from stagewise.hardware import available_cores
from stagewise.llc.module import estimate_llc_module
from stagewise.llc.sampler import LLCResult, SGLDConfig, resolve_compute_dtype

__all__ = ["LLCSweep", "estimate_llc_sweep", "sweep_cache_key", "compare_sweeps", "flagged_checkpoints", "convergence_summary",
           "CalibrationResult", "calibrate_sgld", "plot_llc_traces"]

log = logging.getLogger(__name__)

Checkpoint = tuple[int, Mapping[str, torch.Tensor] | str | Path]


@dataclass(frozen=True, eq=False)
class LLCSweep:
    """λ̂ at each checkpoint: ``steps`` [N] and one :class:`LLCResult` per step (same order)."""

    steps: np.ndarray
    results: list[LLCResult]

    @property
    def llc_mean(self) -> np.ndarray:
        return np.array([r.llc_mean for r in self.results])

    @property
    def llc_std(self) -> np.ndarray:
        return np.array([r.llc_std for r in self.results])

    @property
    def llc_sem(self) -> np.ndarray:
        return np.array([r.llc_sem for r in self.results])

    @property
    def loss_init(self) -> np.ndarray:
        return np.array([r.loss_init for r in self.results])

    @property
    def diagnostics(self) -> dict[int, dict[int, list[str]]]:
        """{step: {chain: flags}} for the checkpoints with flagged chains only."""
        return {int(s): r.diagnostics for s, r in zip(self.steps, self.results) if r.diagnostics}

    @property
    def unconverged_steps(self) -> list[int]:
        """Checkpoints whose estimate is flagged ``unconverged`` (drift or chains' disagreement)."""
        return [int(s) for s, r in zip(self.steps, self.results) if r.unconverged]

    def to_frame(self):
        """One row per checkpoint: λ̂ and its errors, the per-chain ``flags`` and the estimate's
        convergence (``draws_to_settle``, ``drift``, ``drift_z``, ``spread``, ``rhat``, ``unconverged``)."""
        import pandas as pd

        conv = [r.convergence for r in self.results]
        return pd.DataFrame({"step": self.steps, "llc_mean": self.llc_mean, "llc_std": self.llc_std,
                             "llc_sem": self.llc_sem, "loss_init": self.loss_init,
                             "flags": [sorted({f for fl in r.diagnostics.values() for f in fl}) for r in self.results],
                             **{k: [c[k] for c in conv] for k in CONVERGENCE_COLUMNS}})

    def flagged_checkpoints(self):
        """The rows of :meth:`to_frame` with a flagged chain or an unconverged estimate (for notebooks to print)."""
        return flagged_checkpoints(self.to_frame())

    def convergence_summary(self) -> dict:
        """Share of estimates flagged, for a headline JSON: see :func:`convergence_summary`."""
        return convergence_summary(self.to_frame())


CONVERGENCE_COLUMNS = ("draws_to_settle", "drift", "drift_z", "spread", "rhat", "unconverged")


def flagged_checkpoints(frame):
    """Rows of a sweep's frame (``LLCSweep.to_frame`` or a refined-LLC frame) whose estimate is
    ``unconverged`` or has a flagged chain, with the columns a reader needs to judge them."""
    flags = frame["flags"].map(lambda f: bool(len(f)) if not isinstance(f, str) else bool(f))
    rows = frame[frame["unconverged"].astype(bool) | flags]
    cols = [c for c in ("step", "head", "data", "llc_mean", "llc_sem", "flags", "draws_to_settle", "drift", "drift_z",
                        "spread", "rhat", "unconverged") if c in rows.columns]
    return rows[cols].reset_index(drop=True)


def convergence_summary(frame) -> dict:
    """{estimates, unconverged, share_unconverged, flagged_chains_share, median_drift, max_abs_drift,
    median_settle_fraction}: how much of a sweep's curve rests on estimates that have not settled."""
    n = int(len(frame))
    unconv = int(frame["unconverged"].astype(bool).sum())
    flagged = int(frame["flags"].map(lambda f: bool(len(f)) if not isinstance(f, str) else bool(f)).sum())
    drift = frame["drift"].astype(float)
    return {"estimates": n, "unconverged": unconv, "share_unconverged": unconv / n if n else float("nan"),
            "share_with_flagged_chains": flagged / n if n else float("nan"),
            "median_drift": float(drift.median()), "max_abs_drift": float(drift.abs().max()),
            "unconverged_steps": [int(s) for s in frame.loc[frame["unconverged"].astype(bool), "step"]]}


def _tensor_digest(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    items = sorted(tensors.items()) if isinstance(tensors, Mapping) else enumerate(tensors)
    for k, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        # reshape first: view(uint8) refuses 0-d tensors (TransformerLens' attn.IGNORE buffer)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _callable_id(fn: Callable) -> Any:
    """A JSON-able identity for a top-level function or a functools.partial of one."""
    if isinstance(fn, functools.partial):
        return {"partial": _callable_id(fn.func), "args": config_to_dict(list(fn.args)),
                "keywords": config_to_dict(dict(fn.keywords))}
    name = getattr(fn, "__qualname__", None)
    if name is None or "<lambda>" in name or "<locals>" in name:
        raise TypeError(f"{fn!r} must be a top-level function (or a functools.partial of one) so that it can be "
                        "sent to worker processes and named in the cache key; lambdas and closures cannot")
    return f"{fn.__module__}.{name}"


def _data_id(data) -> Any:
    if data is None:
        return None
    if callable(data):
        return _callable_id(data)
    return _tensor_digest([data] if isinstance(data, torch.Tensor) else list(data))


def _load_state(state) -> dict[str, torch.Tensor]:
    if isinstance(state, (str, Path)):
        state = load_artifact(Path(state))
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint must be a state_dict or a path to one, got {type(state).__name__}")
    return dict(state)


def _run_checkpoint(payload: dict) -> dict:
    """Worker entry point (top level, so it pickles): λ̂ at one checkpoint, as a plain dict."""
    threads = payload.get("threads")
    if threads:
        torch.set_num_threads(threads)
    model = payload["model_fn"]()
    model.load_state_dict(_load_state(payload["state"]))
    model.to(payload.get("device") or "cpu").eval()
    data = payload["data"]
    if callable(data):
        data = data()
    result = estimate_llc_module(model, payload["loss"], data, payload["config"],
                                 params_to_sample=payload["params_to_sample"], param_mask=payload["param_mask"],
                                 chain_mode=payload["chain_mode"], compile=payload["compile"],
                                 compute_dtype=payload.get("compute_dtype"), cuda_graph=payload.get("cuda_graph", False),
                                 progress=False)
    return result.to_dict()


def _resolve_cuda_graph(setting: bool | None, device: str | None, chain_mode: str, compile: bool) -> bool:
    """``cuda_graph`` None = where it applies: a CUDA device, chains vmapped ('vmap', or 'auto', which
    vmaps on CUDA), no torch.compile. Not part of the cache key: the same numbers up to rounding."""
    if setting is None:
        return (device or "cpu").startswith("cuda") and chain_mode in ("auto", "vmap") and not compile
    return bool(setting)


def sweep_cache_key(config: SGLDConfig, model_fn: Callable, loss: Callable, data, params_to_sample=None,
                    param_mask=None, compute_dtype: str | None = None) -> dict:
    """The cache key of one checkpoint's estimate, less the checkpoint's weights digest: everything
    that changes the number. ``compute_dtype`` enters only when it is not None (the exact path), so
    the keys of every fp32 result written before it existed stay valid, and a bf16 estimate never
    answers for an fp32 one (or the other way round). The loss path is in the key through the loss
    and model factory (e.g. the predictions-only regression loss is another function)."""
    key = {"config": config, "model_fn": _callable_id(model_fn), "loss": _callable_id(loss), "data": _data_id(data),
           "params_to_sample": list(params_to_sample) if params_to_sample else None,
           "param_mask": _tensor_digest(param_mask) if param_mask else None}
    if compute_dtype is not None:
        key["compute_dtype"] = compute_dtype
    return key


def _make_executor(executor, max_workers: int | None):
    """Returns (executor, owned, wait) where wait(futures) yields finished futures."""
    if executor == "serial":
        return None, False, None
    if executor == "processes":
        workers = max_workers or available_cores()
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        return pool, True, cf.as_completed
    if type(executor).__module__.startswith("distributed"):  # dask.distributed.Client
        from distributed import as_completed

        return executor, False, as_completed
    if isinstance(executor, cf.Executor):
        return executor, False, cf.as_completed
    raise ValueError(f"executor must be 'serial', 'processes', a dask.distributed.Client or a "
                     f"concurrent.futures.Executor, got {executor!r}")


def estimate_llc_sweep(
    checkpoints: Sequence[Checkpoint],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    config: SGLDConfig,
    *,
    params_to_sample: Sequence[str] | None = None,
    param_mask: Mapping[str, torch.Tensor] | None = None,
    executor: Any = "serial",
    max_workers: int | None = None,
    cache: bool = True,
    cache_root: Path | None = None,
    chain_mode: str = "auto",
    compile: bool = False,
    compute_dtype: str | None = None,
    cuda_graph: bool | None = False,
    device: str | None = None,
    progress: bool = True,
) -> LLCSweep:
    """λ̂(w_t) at every checkpoint ``(t, weights)`` with the same seed everywhere (D.3.2).

    ``model_fn()`` builds the module (weights are then loaded from the checkpoint), ``loss(forward,
    batch)`` as in :func:`stagewise.llc.estimate_llc_module`, ``data`` the SGLD data set (or a
    top-level function returning it). ``params_to_sample`` must be a list of names here (it is part
    of the cache key). Cached results are reused unless ``cache=False``; a result is written as
    soon as its checkpoint finishes. ``compute_dtype`` (None: exact, the weights' dtype; 'bfloat16';
    or 'auto' = :func:`stagewise.llc.resolve_compute_dtype`) is resolved here and is part of the key.
    ``device`` (default CPU) is where each checkpoint's chains run (model and batches moved there);
    not part of the key: another device gives the same estimate up to float rounding.
    ``cuda_graph`` (False; None = wherever it applies: CUDA, vmapped chains, no compile) replays
    each SGLD step as a CUDA graph (:func:`stagewise.llc.estimate_llc`); not part of the key either.
    """
    if params_to_sample is not None and callable(params_to_sample):
        raise TypeError("estimate_llc_sweep needs params_to_sample as a list of names (a predicate cannot be hashed)")
    steps = [int(s) for s, _ in checkpoints]
    if len(set(steps)) != len(steps):
        raise ValueError("checkpoint steps must be distinct")
    compute_dtype = resolve_compute_dtype(compute_dtype, device or "cpu")
    common = sweep_cache_key(config, model_fn, loss, data, params_to_sample, param_mask, compute_dtype)
    results: dict[int, LLCResult] = {}
    todo: list[tuple[int, Path | None, dict]] = []
    for step, state in checkpoints:
        path = None
        if cache:
            weights = _tensor_digest(_load_state(state))
            path = artifact_dir("llc", {**common, "weights": weights}, root=cache_root) / "result.pt"
            if path.exists():
                results[step] = LLCResult.from_dict(load_artifact(path))
                continue
        todo.append((step, path, {"state": state}))
    if results:
        log.info("LLC sweep: %d of %d checkpoints cached, %d to compute", len(results), len(steps), len(todo))

    pool, owned, wait = _make_executor(executor, max_workers)
    threads = None
    if executor == "processes":
        threads = max(1, available_cores() // (max_workers or available_cores()))
    base = {"model_fn": model_fn, "loss": loss, "data": data, "config": config, "params_to_sample": params_to_sample,
            "param_mask": param_mask, "chain_mode": chain_mode, "compile": compile, "compute_dtype": compute_dtype,
            "cuda_graph": _resolve_cuda_graph(cuda_graph, device, chain_mode, compile),
            "device": device, "threads": threads}

    def finish(step: int, path: Path | None, out: dict) -> None:
        result = LLCResult.from_dict(out)
        if path is not None:
            atomic_save(out, path)
        if result.diagnostics:
            log.warning("LLC at step %d: flagged chains %s", step, result.diagnostics)
        if result.unconverged:
            log.warning("LLC at step %d: estimate unconverged (%s)", step, ", ".join(result.convergence["reasons"]))
        results[step] = result

    bar = tqdm(total=len(steps), initial=len(results), desc="LLC sweep", disable=not progress)
    try:
        if pool is None:
            for step, path, extra in todo:
                finish(step, path, _run_checkpoint({**base, **extra}))
                bar.update()
        else:
            futures = {pool.submit(_run_checkpoint, {**base, **extra}): (step, path) for step, path, extra in todo}
            for fut in wait(list(futures)):
                step, path = futures[fut]
                finish(step, path, fut.result())
                bar.update()
    finally:
        bar.close()
        if owned:
            pool.shutdown(cancel_futures=True)
    order = np.argsort(steps, kind="stable")
    return LLCSweep(np.asarray(steps)[order], [results[steps[i]] for i in order])


def compare_sweeps(a: LLCSweep, b: LLCSweep, n_se: float = 2.0):
    """Checkpoint-by-checkpoint agreement of two λ̂(t) curves of the same run (e.g. the exact path
    against a fast path): ``(table, summary)``.

    ``table`` has per common step both means and standard errors, the difference and
    ``z = (a − b) / sqrt(se_a² + se_b²)``; ``summary`` counts the checkpoints with |z| ≤ ``n_se``.
    Checkpoints where either curve has no standard error (one chain, or every chain excluded)
    are compared in the table but not counted (``comparable`` False): agreement needs an error bar.
    """
    import pandas as pd

    if not n_se > 0:
        raise ValueError(f"n_se must be > 0, got {n_se}")
    common = np.intersect1d(a.steps, b.steps)
    if not len(common):
        raise ValueError("the two sweeps share no checkpoint step")
    ia = {int(s): i for i, s in enumerate(a.steps)}
    ib = {int(s): i for i, s in enumerate(b.steps)}
    rows = []
    for step in common:
        i, j = ia[int(step)], ib[int(step)]
        ma, mb, sa, sb = a.llc_mean[i], b.llc_mean[j], a.llc_sem[i], b.llc_sem[j]
        se = float(np.hypot(sa, sb))
        ok = bool(np.isfinite([ma, mb, se]).all() and se > 0)
        rows.append({"step": int(step), "llc_a": ma, "se_a": sa, "llc_b": mb, "se_b": sb, "difference": ma - mb,
                     "z": (ma - mb) / se if ok else float("nan"), "comparable": ok})
    table = pd.DataFrame(rows)
    comparable = table[table.comparable]
    within = int((comparable.z.abs() <= n_se).sum())
    summary = {"checkpoints": int(len(table)), "comparable": int(len(comparable)), "within": within, "n_se": n_se,
               "all_within": within == len(comparable) and len(comparable) > 0,
               "max_abs_z": float(comparable.z.abs().max()) if len(comparable) else float("nan"),
               "mean_difference": float(comparable.difference.mean()) if len(comparable) else float("nan")}
    return table, summary


# --------------------------------------------------------------------------------------------
# Calibration (D.3.3): a small grid over ε and γ (and nβ) at a few checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Sweeps over checkpoints for each grid point (ε, γ, nβ) of the calibration grid."""

    epsilons: tuple[float, ...]
    gammas: tuple[float, ...]
    nbetas: tuple[float | None, ...]
    sweeps: dict[tuple[float, float, float | None], LLCSweep]

    def to_frame(self):
        """One row per (ε, γ, nβ, checkpoint): llc_mean, llc_std, flags (empty = well behaved)."""
        import pandas as pd

        frames = []
        for (eps, gamma, nbeta), sweep in self.sweeps.items():
            df = sweep.to_frame()
            df.insert(0, "nbeta", sweep.results[0].nbeta if nbeta is None else nbeta)
            df.insert(0, "gamma", gamma)
            df.insert(0, "epsilon", eps)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)


def calibrate_sgld(
    checkpoints: Sequence[Checkpoint],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    base_config: SGLDConfig,
    *,
    epsilons: Sequence[float],
    gammas: Sequence[float] = (),
    nbetas: Sequence[float | None] = (),
    **sweep_kwargs,
) -> CalibrationResult:
    """Run :func:`estimate_llc_sweep` for every (ε, γ, nβ) of the grid (App. D.3.3, Fig. D.6).

    Unset axes keep ``base_config``'s value. Rule of thumb (D.3.3): the largest ε whose traces
    converge without divergence, the smallest γ without escapes, nβ as large as is stable.
    Results are cached like any sweep, so extending the grid only computes the new points.
    """
    gammas = tuple(gammas) or (base_config.gamma,)
    nbetas = tuple(nbetas) or (base_config.nbeta,)
    sweeps = {}
    for eps in epsilons:
        for gamma in gammas:
            for nbeta in nbetas:
                cfg = dataclasses.replace(base_config, epsilon=float(eps), gamma=float(gamma), nbeta=nbeta)
                log.info("calibration: epsilon=%g gamma=%g nbeta=%s", eps, gamma, nbeta)
                sweeps[(float(eps), float(gamma), nbeta)] = estimate_llc_sweep(
                    checkpoints, model_fn, loss, data, cfg, **sweep_kwargs)
    return CalibrationResult(tuple(map(float, epsilons)), tuple(map(float, gammas)), nbetas, sweeps)


def plot_llc_traces(calibration: CalibrationResult, step: int | None = None, nbeta: float | None = None):
    """Fig. D.6/D.7-style grid: rows γ, columns ε; per-chain online λ̂ traces (thin) and their mean
    (thick) at checkpoint ``step`` (default: the last), flagged chains drawn dashed."""
    import matplotlib.pyplot as plt

    from stagewise.plotting import apply_style

    apply_style()
    nbeta = calibration.nbetas[0] if nbeta is None else nbeta
    eps_list, gam_list = calibration.epsilons, calibration.gammas
    fig, axes = plt.subplots(len(gam_list), len(eps_list), figsize=(2.6 * len(eps_list), 2.0 * len(gam_list)),
                             sharex=True, squeeze=False)
    for i, gamma in enumerate(gam_list):
        for j, eps in enumerate(eps_list):
            ax = axes[i][j]
            sweep = calibration.sweeps[(eps, gamma, nbeta)]
            k = len(sweep.steps) - 1 if step is None else int(np.flatnonzero(sweep.steps == step)[0])
            r = sweep.results[k]
            x = np.arange(1, r.llc_trace.shape[1] + 1)
            for c in range(r.llc_trace.shape[0]):
                flagged = c in r.diagnostics
                ax.plot(x, r.llc_trace[c], lw=0.7, alpha=0.6, ls="--" if flagged else "-",
                        color="tab:red" if flagged else "tab:gray")
            ax.plot(x, r.llc_trace_mean, lw=1.8, color="black")
            flags = sorted({f for fl in r.diagnostics.values() for f in fl})
            ax.set_title(f"ε={eps:g}, γ={gamma:g}" + (f"\n{', '.join(flags)}" if flags else ""), fontsize=8,
                         color="tab:red" if flags else "black")
            finite = r.llc_trace[np.isfinite(r.llc_trace)]
            if finite.size:
                lo, hi = np.percentile(finite, [1, 99])
                pad = 0.1 * (hi - lo + 1e-12)
                ax.set_ylim(lo - pad, hi + pad)
            if i == len(gam_list) - 1:
                ax.set_xlabel("SGLD draw τ")
            if j == 0:
                ax.set_ylabel("online λ̂_τ (eq. 26)")
    step_label = calibration.sweeps[(eps_list[0], gam_list[0], nbeta)].steps[-1 if step is None else 0]
    fig.suptitle(f"LLC traces at checkpoint {step if step is not None else int(step_label)}", fontsize=10)
    fig.tight_layout()
    return fig
