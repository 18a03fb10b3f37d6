"""LLC over training checkpoints (λ̂(t), main paper Fig. 1); calibration grids are in :mod:`stagewise.llc.calibration`.

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
import functools
import hashlib
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact
from stagewise.hardware import available_cores
from stagewise.llc.module import estimate_llc_module
from stagewise.llc.sampler import LLCResult, SGLDConfig, resolve_compute_dtype
from stagewise.progress import tqdm

__all__ = ["LLCSweep", "estimate_llc_sweep", "sweep_cache_key", "compare_sweeps", "flagged_checkpoints", "convergence_summary"]

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
        convergence (``draws_to_settle``, ``drift``, ``drift_z``, ``half_drift``, ``spread``, ``rhat``, ``unconverged``)."""
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


CONVERGENCE_COLUMNS = ("draws_to_settle", "drift", "drift_z", "half_drift", "spread", "rhat", "unconverged")


def flagged_checkpoints(frame):
    """Rows of a sweep's frame (``LLCSweep.to_frame`` or a refined-LLC frame) whose estimate is
    ``unconverged`` or has a flagged chain, with the columns a reader needs to judge them."""
    flags = frame["flags"].map(lambda f: bool(len(f)) if not isinstance(f, str) else bool(f))
    rows = frame[frame["unconverged"].astype(bool) | flags]
    cols = [c for c in ("step", "head", "data", "llc_mean", "llc_sem", "flags", "draws_to_settle", "drift", "half_drift",
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
        # a model whose reduced-precision numerics changed (e.g. the plain-torch LM, whose attention
        # runs in fp32 under bf16 autocast) names its revision (``bf16_numerics``), so estimates
        # cached by its earlier code are not read back as this code's; fp32 keys stay as they were
        revision = getattr(_root_function(model_fn), "bf16_numerics", None)
        if revision is not None:
            key["bf16_numerics"] = revision
    return key


def _root_function(fn: Callable) -> Callable:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


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
