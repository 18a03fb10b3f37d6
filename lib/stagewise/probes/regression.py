"""Probes of the regression transformer over training (main paper §6, App. C.3–C.4).

The probes themselves live in :mod:`~stagewise.probes.regression_behaviour` (App. C.3) and
:mod:`~stagewise.probes.regression_structure` (App. C.4) and are re-exported here. This module adds
the scalar-probe set and :func:`probe_checkpoints`, which evaluates it at every checkpoint::

    batch = sample_batch(profile.task, 2048, torch.Generator().manual_seed(1))
    table = probe_checkpoints(run.load_model, run.checkpoint_steps, batch,
                              scalar_probes(profile.task.noise_variance))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import pandas as pd
import torch
import torch.nn as nn

from stagewise.data.regression import RegressionBatch
from stagewise.probes.regression_behaviour import *  # noqa: F403 (re-export)
from stagewise.probes.regression_behaviour import __all__ as _behaviour_all
from stagewise.probes.regression_behaviour import behaviour_summary, check_batch, ood_generalisation
from stagewise.probes.regression_structure import *  # noqa: F403 (re-export)
from stagewise.probes.regression_structure import __all__ as _structure_all
from stagewise.probes.regression_structure import (
    SMALL_WEIGHT_THRESHOLD,
    attention_head_scores,
    effective_rank,
    embedding_alignment,
    embedding_singular_values,
    explained_variance,
    layer_norm_collapse,
    positional_embedding_singular_values,
    unembedding_collapse,
)
from stagewise.progress import tqdm

__all__ = [*_behaviour_all, *_structure_all, "ScalarProbe", "scalar_probes", "probe_checkpoint", "probe_checkpoints",
           "weights_over_training"]

log = logging.getLogger(__name__)

# A scalar probe maps (model, batch) to one number or to several named numbers.
ScalarProbe = Callable[[nn.Module, RegressionBatch], "float | Mapping[str, float]"]


def _embedding(model, batch):
    sv = embedding_singular_values(model)
    out = {f"sv{i}": float(s) for i, s in enumerate(sv)}
    out["effective_rank"] = effective_rank(sv)
    out["min_variance_fraction"] = float(explained_variance(sv)[-1])  # C.4.1: 2.9% vs ~24%
    return out


def _positional(model, batch):
    sv = positional_embedding_singular_values(model)
    out = {f"sv{i}": float(s) for i, s in enumerate(sv)}
    out["effective_rank"] = effective_rank(sv)
    out["frob_norm"] = float(model.pos_embedding.detach().norm())
    return out


def _alignment(model, batch):
    return {other: float(embedding_alignment(model, other).mean()) for other in ("unembedding", "positional")}


def _layer_norms(model, batch, threshold):
    out = {}
    for r in layer_norm_collapse(model, threshold).itertuples():
        out[f"{r.layer_norm}.frac_small_weight"] = r.frac_small_weight
        out[f"{r.layer_norm}.weight_std"] = r.weight_std
        out[f"{r.layer_norm}.bias_std"] = r.bias_std
    return out


def _attention(model, batch):
    out = {}
    for r in attention_head_scores(model, batch).itertuples():
        out[f"{r.label}.normalised_entropy"] = r.normalised_entropy
        out[f"{r.label}.variability"] = r.variability
    return out


def _unembedding(model, batch, threshold):
    return unembedding_collapse(model, threshold)


def _ood(model, batch, gains, mean_task):
    table = ood_generalisation(model, batch, gains, mean_task=mean_task)
    out = {}
    for r in table.itertuples():
        out[f"{r.kind}.g={r.gain:g}.normalised_loss"] = r.normalised_loss
        out[f"{r.kind}.g={r.gain:g}.mean_abs_prediction"] = r.mean_abs_prediction
    return out


def scalar_probes(noise_variance: float = 0.125, mean_task: torch.Tensor | None = None,
                  ood_gains: Iterable[float] = (0.1, 10.0, 100.0),
                  threshold: float = SMALL_WEIGHT_THRESHOLD) -> dict[str, ScalarProbe]:
    """The standard set of per-checkpoint probes of App. C, as ``name -> probe``.

    ``noise_variance`` is the task's σ² (ridge reference; the paper's 0.125 by default),
    ``mean_task`` the prior mean t̄ (None: 0), ``ood_gains`` the g of the OOD columns and
    ``threshold`` the small-weight threshold of Fig. C.7.
    """
    ood_gains = tuple(ood_gains)
    return {
        "behaviour": partial(behaviour_summary, noise_variance=noise_variance, mean_task=mean_task),  # C.3.1-2
        "ood": partial(_ood, gains=ood_gains, mean_task=mean_task),  # C.3.3
        "embedding": _embedding,  # C.4.1
        "positional": _positional,  # C.4.2
        "alignment": _alignment,  # C.4.2, Fig. C.5c
        "unembedding": partial(_unembedding, threshold=threshold),  # C.4.3
        "layer_norm": partial(_layer_norms, threshold=threshold),  # C.4.4
        "attention": _attention,  # C.4.5, eqs. 17-18
    }


def probe_checkpoint(model: nn.Module, batch: RegressionBatch,
                     probes: Mapping[str, ScalarProbe] | None = None) -> dict[str, float]:
    """Evaluate scalar probes on one model: ``{column: value}`` (one row of :func:`probe_checkpoints`).

    A probe returning a float gives column ``name``; one returning a mapping gives ``name.key`` columns.
    ``probes`` defaults to :func:`scalar_probes` with the paper's σ² = 0.125.
    """
    probes = scalar_probes() if probes is None else probes
    if not probes:
        raise ValueError("probes must hold at least one probe")
    check_batch(model, batch)
    row: dict[str, float] = {}
    with torch.no_grad():
        for name, probe in probes.items():
            value = probe(model, batch)
            if isinstance(value, Mapping):
                row.update({f"{name}.{k}": float(v) for k, v in value.items()})
            else:
                row[name] = float(value)
    return row


def probe_checkpoints(run_loader: Callable[[int], nn.Module], steps: Iterable[int], batch: RegressionBatch,
                      probes: Mapping[str, ScalarProbe] | None = None, progress: bool = True) -> pd.DataFrame:
    """Evaluate scalar probes at every checkpoint: one row per step (wide format).

    ``run_loader(step)`` returns the model at that checkpoint (e.g. ``TrainedRun.load_model``);
    ``batch`` is the fixed evaluation batch, the same at every checkpoint. ``probes`` defaults to
    :func:`scalar_probes` with the paper's σ² = 0.125 (pass your own for another task); columns as in
    :func:`probe_checkpoint`. The first column is ``step``.
    """
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("steps must hold at least one checkpoint step")
    probes = scalar_probes() if probes is None else probes
    if not probes:
        raise ValueError("probes must hold at least one probe")
    rows = [{"step": step, **probe_checkpoint(run_loader(step), batch, probes)}
            for step in tqdm(steps, desc="probes", disable=not progress)]
    log.info("probed %d checkpoints with %d probes", len(steps), len(probes))
    return pd.DataFrame(rows)


def weights_over_training(run_loader: Callable[[int], nn.Module], steps: Iterable[int],
                          read: Callable[[nn.Module], Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack tensors read from each checkpoint's model: ``{name: [len(steps), ...]}``.

    For the whole-vector plots of App. C.4.3–C.4.4 (Figs. C.6, C.7: every component of γ, β, W_U
    over time), e.g. ``read=lambda m: {"gamma": m.ln_final.weight}``. ``read`` must return tensors
    of the same shapes at every checkpoint.
    """
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("steps must hold at least one checkpoint step")
    stacked: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for step in steps:
            for name, tensor in read(run_loader(step)).items():
                stacked.setdefault(name, []).append(tensor.detach().clone())
    return {name: torch.stack(ts) for name, ts in stacked.items()}
