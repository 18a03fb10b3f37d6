"""Refined LLCs of attention heads ([W]).

The estimator λ̂(w*; V, q') (§3.2: eq. 2 with the Gibbs posterior of eq. 6 over V, for the
refined LLC of eqs. 4-5) is the LLC engine's SGLD with updates projected onto V and batches from q':

* Weight-refined LLC (wrLLC) λ̂(w*; V): SGLD moves only the weights V of one head — its W_Q, W_K,
  W_V, W_O and biases b_Q, b_K, b_V — with every other weight frozen at w*. In TransformerLens these
  are slices along the head axis of ``blocks.{l}.attn.W_*`` / ``b_*``; the shared output bias b_O
  belongs to no head and is frozen (the paper's "biases" of a head are its per-head ones).
* Data-refined LLC (drLLC) λ̂(w*; q'): the same estimator with SGLD batches and the loss average
  drawn from another data set q' (e.g. code); both together is the wdrLLC λ̂(w*; V, q').

:func:`head_llc_sweep` computes the w(d)rLLC of every head (or chosen heads, or groups of heads
sampled together, e.g. both induction heads in Fig. 10) on every data set at every checkpoint;
:func:`data_llc_sweep` the whole-model drLLC on several data sets (Fig. 12). Both run every
(checkpoint, head, data set) estimate through :func:`stagewise.llc.estimate_llc_sweep` (the
engine's runner, payloads and executors), cached under the engine's key per (checkpoint, head,
data, SGLD config) as soon as it finishes, so an interrupted sweep resumes; on a pool
(``"processes"``, a Dask client, any ``concurrent.futures.Executor``) all estimates are in flight
at once, with no change to the calling code.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from stagewise.cache import artifact_dir, atomic_save, load_artifact
from stagewise.hardware import available_cores
from stagewise.llc import LLCResult, SGLDConfig, estimate_llc_sweep, resolve_compute_dtype
from stagewise.llc.sweep import _load_state
from stagewise.progress import tqdm

__all__ = ["HEAD_PARAMS", "head_param_mask", "heads_param_mask", "head_labels", "parse_head", "head_chain_model_fn",
           "head_llc_sweep", "data_llc_sweep", "head_sgld_calibration"]

log = logging.getLogger(__name__)

HEAD_PARAMS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


def head_param_mask(model: torch.nn.Module, layer: int, head: int) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``(params_to_sample, param_mask)`` selecting exactly head ``layer:head`` of a HookedTransformer,
    for :func:`stagewise.llc.estimate_llc_module`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers - 1}], got {layer}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head must be in [0, {n_heads - 1}], got {head}")
    params = dict(model.named_parameters())
    names, masks = [], {}
    for p in HEAD_PARAMS:
        name = f"blocks.{layer}.attn.{p}"
        mask = torch.zeros_like(params[name], dtype=torch.bool)
        mask[head] = True
        names.append(name)
        masks[name] = mask
    return names, masks


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """Head names ``layer:head`` indexed from 0, as in the refined-LLC paper (e.g. ``1:6``)."""
    return [f"{l}:{h}" for l in range(n_layers) for h in range(n_heads)]


def parse_head(head: str | tuple[int, int], n_layers: int, n_heads: int) -> tuple[int, int]:
    """``"1:6"`` or ``(1, 6)`` -> ``(1, 6)``, checked against the model's shape."""
    if isinstance(head, str):
        parts = head.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"head must be written 'layer:head' (e.g. '1:6'), got {head!r}")
        layer, index = int(parts[0]), int(parts[1])
    elif isinstance(head, (tuple, list)) and len(head) == 2 and all(isinstance(v, int) for v in head):
        layer, index = head
    else:
        raise ValueError(f"head must be 'layer:head' or a (layer, head) pair, got {head!r}")
    if not 0 <= layer < n_layers:
        raise ValueError(f"head {head!r}: layer must be in [0, {n_layers - 1}], got {layer}")
    if not 0 <= index < n_heads:
        raise ValueError(f"head {head!r}: head index must be in [0, {n_heads - 1}], got {index}")
    return layer, index


def heads_param_mask(model: torch.nn.Module, heads: Sequence[str | tuple[int, int]]
                     ) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``(params_to_sample, param_mask)`` of several heads sampled together (the union of their
    :func:`head_param_mask`), e.g. both induction heads at once (refined paper Fig. 10, right)."""
    if isinstance(heads, str) or not heads:
        raise ValueError(f"heads must be a non-empty list of heads, got {heads!r}")
    names: list[str] = []
    masks: dict[str, torch.Tensor] = {}
    for head in heads:
        layer, index = parse_head(head, model.cfg.n_layers, model.cfg.n_heads)
        n, m = head_param_mask(model, layer, index)
        for name in n:
            if name in masks:
                masks[name] = masks[name] | m[name]
            else:
                names.append(name)
                masks[name] = m[name]
    return names, masks


def head_chain_model_fn(model_fn: Callable[[], torch.nn.Module], heads: Sequence[tuple[int, int]],
                        probe: torch.nn.Module | None = None) -> Callable[[], torch.nn.Module]:
    """The model function whose SGLD chains move ``heads`` ((layer, head) pairs) fastest: for the
    plain-torch twin (:class:`~stagewise.models.language_fast.FastAttentionOnlyLM`) and heads of one
    layer, a :class:`~stagewise.models.language_fast.HeadChainLM` — the same parameters and function,
    its frozen prefix computed once per batch and no backward pass through it — else ``model_fn``
    itself (a HookedTransformer, or heads of several layers)."""
    from stagewise.models.language_fast import FastAttentionOnlyLM, HeadChainLM, make_head_chain_language_model

    probe = model_fn() if probe is None else probe
    layers = {l for l, _ in heads}
    if type(probe) is not FastAttentionOnlyLM or len(layers) != 1 or isinstance(probe, HeadChainLM):
        return model_fn
    return partial(make_head_chain_language_model, probe.cfg, next(iter(layers)), tuple(sorted(h for _, h in heads)))


# --------------------------------------------------------------------------------------------
# Sweeps over checkpoints x heads x data sets
# --------------------------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _open_executor(executor, max_workers: int | None):
    """(executor for estimate_llc_sweep, pool we own or None, number of estimates to keep in flight)."""
    if executor == "serial":
        return "serial", None, 1
    if executor == "processes":
        cores = available_cores()
        workers = max_workers or cores
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        # torch threads split between the workers, as estimate_llc_sweep does for its own pool
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(max(1, cores // workers),))
        return pool, pool, 2 * workers
    if type(executor).__module__.startswith("distributed") or isinstance(executor, cf.Executor):
        return executor, None, max_workers or 64
    raise ValueError(f"executor must be 'serial', 'processes', a dask.distributed.Client or a "
                     f"concurrent.futures.Executor, got {executor!r}")


def _weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """The LLC cache's digest of a checkpoint (``stagewise.llc.sweep._tensor_digest``), written so
    that it also handles 0-dim tensors: TransformerLens keeps the scalar ``attn.IGNORE`` in every
    state_dict, on which ``_tensor_digest`` fails (``view(torch.uint8)`` of a 0-dim tensor). Same
    bytes, same digest otherwise, so these cache entries are the ones estimate_llc_sweep reads."""
    h = hashlib.sha256()
    for k, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _run_units(jobs: list[dict], checkpoints, common: dict, executor, max_workers: int | None, cache: bool,
               cache_root, progress: bool, desc: str) -> list[list[LLCResult]]:
    """λ̂ for every (job, checkpoint): results[j][i] for job j at checkpoint i.

    Each estimate is one single-checkpoint :func:`estimate_llc_sweep` (the engine's runner:
    payloads, workers, executors) with the engine's cache key per (checkpoint, job); it is written
    to the cache as soon as it finishes, so a killed sweep loses only the estimates in flight. Run
    serially, it looks in the cache again before each estimate, so that two processes given the same
    sweep (e.g. one per core, one of them in another order) share the work instead of repeating it.
    With a pool, threads of this process each wait on one estimate, keeping the pool busy.
    """
    from stagewise.llc.sweep import sweep_cache_key

    steps = [int(s) for s, _ in checkpoints]
    if len(set(steps)) != len(steps):
        raise ValueError("checkpoint steps must be distinct")
    digests = [_weights_digest(_load_state(state)) for _, state in checkpoints] if cache else [None] * len(steps)
    results: list[list[LLCResult | None]] = [[None] * len(steps) for _ in jobs]
    todo = []
    for j, job in enumerate(jobs):
        key = sweep_cache_key(common["config"], job.get("model_fn", common["model_fn"]), common["loss"], job["data"],
                              job.get("params_to_sample"), job.get("param_mask"), common["compute_dtype"])
        for i, (step, state) in enumerate(checkpoints):
            path = artifact_dir("llc", {**key, "weights": digests[i]}, root=cache_root) / "result.pt" if cache else None
            if path is not None and path.exists():
                results[j][i] = LLCResult.from_dict(load_artifact(path))
            else:
                todo.append((j, i, path))
    total = len(jobs) * len(steps)
    if total > len(todo):
        log.info("%s: %d of %d estimates cached, %d to compute", desc, total - len(todo), total, len(todo))
    sweep_executor, owned, in_flight = _open_executor(executor, max_workers)

    def run(j: int, i: int) -> LLCResult:
        sweep = estimate_llc_sweep([checkpoints[i]], **{**common, **jobs[j]}, executor=sweep_executor, cache=False,
                                   progress=False)
        return sweep.results[0]

    def finish(j: int, i: int, path, result: LLCResult) -> None:
        if path is not None:
            atomic_save(result.to_dict(), path)
        results[j][i] = result

    bar = tqdm(total=total, initial=total - len(todo), desc=desc, disable=not progress)
    try:
        if in_flight == 1:
            for j, i, path in todo:
                if path is not None and path.exists():  # written meanwhile by another process on this sweep
                    results[j][i] = LLCResult.from_dict(load_artifact(path))
                else:
                    finish(j, i, path, run(j, i))
                bar.update()
        elif todo:
            with cf.ThreadPoolExecutor(max_workers=min(in_flight, len(todo))) as threads:
                futures = {threads.submit(run, j, i): (j, i, path) for j, i, path in todo}
                for fut in cf.as_completed(futures):
                    finish(*futures[fut], fut.result())
                    bar.update()
    finally:
        bar.close()
        if owned is not None:
            owned.shutdown(cancel_futures=True)
    return results  # type: ignore[return-value]


def _as_datasets(data) -> dict[str, Any]:
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data must name at least one data set")
        return {str(k): v for k, v in data.items()}
    return {"train": data}


def _frame_rows(steps: Sequence[int], results: Sequence[LLCResult], extra: dict) -> list[dict]:
    rows = []
    for step, r in zip(steps, results):
        flags = sorted({f for fl in r.diagnostics.values() for f in fl})
        rows.append({"step": int(step), **extra, "llc_mean": r.llc_mean, "llc_std": r.llc_std, "llc_sem": r.llc_sem,
                     "loss_init": r.loss_init, "num_sampled": r.num_sampled, "nbeta": r.nbeta,
                     "excluded_chains": len(r.excluded_chains), "flags": ",".join(flags),
                     "drift": r.convergence["drift"], "drift_z": r.convergence["drift_z"],
                     "half_drift": r.convergence["half_drift"],
                     "draws_to_settle": r.convergence["draws_to_settle"], "spread": r.convergence["spread"],
                     "rhat": r.convergence["rhat"], "unconverged": r.unconverged,
                     **{f"llc_chain_{c}": float(v) for c, v in enumerate(r.llc_per_chain)}})
    return rows


def head_llc_sweep(
    checkpoints: Sequence[tuple[int, Any]],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    config: SGLDConfig,
    *,
    heads: Sequence[str | tuple[int, int] | Sequence[str]] | None = None,
    executor: Any = "serial",
    max_workers: int | None = None,
    cache: bool = True,
    cache_root=None,
    chain_mode: str = "loop",
    compile: bool = False,
    compute_dtype: str | None = None,
    head_chains: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """wrLLC λ̂(w_t; V_h) of each head h at each checkpoint t — or the wdrLLC λ̂(w_t; V_h, q') when
    ``data`` names other data sets — with the same SGLD seed everywhere (refined paper Fig. 1-3).

    ``checkpoints``, ``model_fn``, ``loss`` as in :func:`stagewise.llc.estimate_llc_sweep` (the
    model a HookedTransformer). ``data``: the SGLD data set, or ``{name: data set}`` for several
    (e.g. ``{"train": ..., "code": ...}``); each is a Tensor, tuple of Tensors or top-level function
    returning one. ``heads``: labels ``"l:h"`` (default every head), and/or groups of labels
    sampled together (``("1:6", "1:7")``, reported as head ``"1:6+1:7"``).

    Returns a tidy DataFrame, one row per (data, head, step): ``data, head, layer`` (NaN for a
    group spanning layers), ``llc_mean, llc_std, llc_sem, loss_init, num_sampled, nbeta,
    excluded_chains, flags`` (comma-separated chain flags; empty = all chains well behaved).
    ``compute_dtype`` as in :func:`stagewise.llc.estimate_llc_sweep` ('auto' resolved here).
    ``chain_mode`` defaults to 'loop' (not the sampler's 'auto', which vmaps on CUDA): at the
    `paper` profile's LM shapes vmapped chains need 130–650 GB (``stagewise.plan``, calibrated on
    an H200; ``benchmarks/results/gpu_check.md``), while one chain's step already fills a GPU.
    ``head_chains`` (default True): for the plain-torch twin, each head's chains run through
    :func:`head_chain_model_fn` (the same estimate to float rounding, ~1.4x faster on a CPU; its own
    cache entries); False, or ``compile=True``, runs ``model_fn``'s model as it is.
    """
    probe = model_fn()
    n_layers, n_heads = probe.cfg.n_layers, probe.cfg.n_heads
    heads = list(head_labels(n_layers, n_heads) if heads is None else heads)
    if not heads:
        raise ValueError("heads must name at least one head (or be None for all)")
    datasets = _as_datasets(data)
    jobs, meta, seen = [], [], set()
    for head in heads:
        group = [head] if isinstance(head, str) or (isinstance(head, tuple) and len(head) == 2
                                                    and all(isinstance(v, int) for v in head)) else list(head)
        parsed = [parse_head(h, n_layers, n_heads) for h in group]
        label = "+".join(f"{l}:{h}" for l, h in parsed)
        if label in seen:
            raise ValueError(f"head {label!r} is listed twice")
        seen.add(label)
        layers = {l for l, _ in parsed}
        layer = next(iter(layers)) if len(layers) == 1 else float("nan")
        names, mask = heads_param_mask(probe, parsed)
        # compiled chains keep the whole model: the prefix's reuse check is Python control flow
        job_model_fn = head_chain_model_fn(model_fn, parsed, probe) if head_chains and not compile else model_fn
        for name, d in datasets.items():
            jobs.append({"data": d, "params_to_sample": names, "param_mask": mask, "model_fn": job_model_fn})
            meta.append({"data": name, "head": label, "layer": layer})
    common = {"model_fn": model_fn, "loss": loss, "config": config, "chain_mode": chain_mode, "compile": compile,
              "compute_dtype": resolve_compute_dtype(compute_dtype)}
    log.info("head LLC sweep: %d heads x %d data sets x %d checkpoints", len(heads), len(datasets), len(checkpoints))
    results = _run_units(jobs, checkpoints, common, executor, max_workers, cache, cache_root, progress, "head LLCs")
    steps = [int(s) for s, _ in checkpoints]
    rows = [row for res, m in zip(results, meta) for row in _frame_rows(steps, res, m)]
    return pd.DataFrame(rows).sort_values(["data", "head", "step"], kind="stable", ignore_index=True)


def data_llc_sweep(
    checkpoints: Sequence[tuple[int, Any]],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data: Mapping[str, Any],
    config: SGLDConfig,
    *,
    executor: Any = "serial",
    max_workers: int | None = None,
    cache: bool = True,
    cache_root=None,
    chain_mode: str = "loop",
    compile: bool = False,
    compute_dtype: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Whole-model drLLC λ̂(w_t; q') on each data set q' of ``data`` ({name: data set}) at each
    checkpoint (refined paper Fig. 12). Same columns as :func:`head_llc_sweep`, with head ``"all"``;
    chains in a loop by default, as there."""
    datasets = _as_datasets(data)
    common = {"model_fn": model_fn, "loss": loss, "config": config, "chain_mode": chain_mode, "compile": compile,
              "compute_dtype": resolve_compute_dtype(compute_dtype)}
    jobs = [{"data": d} for d in datasets.values()]
    results = _run_units(jobs, checkpoints, common, executor, max_workers, cache, cache_root, progress, "drLLCs")
    steps = [int(s) for s, _ in checkpoints]
    rows = [row for res, name in zip(results, datasets)
            for row in _frame_rows(steps, res, {"data": name, "head": "all", "layer": float("nan")})]
    return pd.DataFrame(rows).sort_values(["data", "step"], kind="stable", ignore_index=True)


def head_sgld_calibration(
    setting: str,
    head: str,
    frame: pd.DataFrame,
    states: Mapping[int, Any],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    config: SGLDConfig,
    settings,
    *,
    compute_dtype: str | None = None,
    head_chains: bool = True,
    progress: bool = True,
):
    """The SGLD calibration (App. D.3.3, :func:`stagewise.llc.sgld_calibration`) of one head's
    refined LLC: checkpoints picked from that head's curve in ``frame`` (a :func:`head_llc_sweep`
    frame, one data set) by :func:`stagewise.llc.calibration_checkpoints` (no boundaries: early,
    peak, late), the chains moving only ``head``'s weights as in the sweep (chains looped;
    ``head_chains`` as there)."""
    from stagewise.llc import calibration_checkpoints, sgld_calibration

    curve = frame[frame["head"] == head].sort_values("step")
    if curve.empty:
        raise ValueError(f"head {head!r} is not in the frame")
    picks = calibration_checkpoints(curve["step"].to_numpy(), curve["llc_mean"].to_numpy(),
                                    num=min(settings.num_checkpoints, 3))
    probe = model_fn()
    parsed = [parse_head(head, probe.cfg.n_layers, probe.cfg.n_heads)]
    names, mask = heads_param_mask(probe, parsed)
    if head_chains:
        model_fn = head_chain_model_fn(model_fn, parsed, probe)
    return sgld_calibration(setting, picks, states, model_fn, loss, data, config, settings, params_to_sample=names,
                            param_mask=mask, compute_dtype=resolve_compute_dtype(compute_dtype), chain_mode="loop",
                            progress=progress)
