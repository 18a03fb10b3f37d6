"""Behavioural probes of the regression transformer (main paper §6, App. C.3).

Every probe takes a *predictor* and a fixed evaluation :class:`~stagewise.data.regression.RegressionBatch`
and returns a tensor, a float or a DataFrame. A predictor is anything with
``predict(tokens [B, 2K, D+1]) -> ŷ [B, K]``: the :class:`RegressionTransformer` itself, or the
reference predictors below (:class:`RidgePredictor`, :class:`TaskPriorPredictor`), so that the
ideal algorithms can be probed exactly like a checkpoint. Probes run under ``torch.no_grad`` and
never modify the model (they do not even call ``.eval()``; the model has no dropout).

Choices where the paper is ambiguous:

* ICL scores (C.3.2) have no formula in the main paper; we use the Developmental-Landscape
  definition ICL_{k1:k2} = ℓ_{k1} − ℓ_{k2} (k 1-indexed), positive when later predictions are
  better. This is the *opposite* sign to the language-model ICL score of App. B.3.3
  (ℓ_500 − ℓ_50, negative = ICL).
* OOD normalised loss (C.3.3): Fig. C.4 divides the loss by g², but eqs. (14)-(15) make g a
  *variance* (x ~ N(0, gI)), so E[y²] grows like g, not g². We report both the literal
  ``loss_over_g2`` and ``normalised_loss`` = loss / loss of the task-prior prediction t̄ᵀx on the
  same OOD batch (scale-free: 1 = no better than the task prior, 0 = perfect).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from stagewise.data.regression import RegressionBatch, RegressionTask, task_set, tokenize
from stagewise.ridge import dmmse_predict, ridge_predict

__all__ = [
    "RidgePredictor",
    "TaskPriorPredictor",
    "task_prior_mean",
    "check_batch",
    "predictions",
    "per_token_loss",
    "icl_score",
    "icl_scores",
    "function_distance",
    "distance_to_zero",
    "distance_to_task_prior",
    "distance_to_ridge",
    "distance_to_dmmse",
    "behaviour_summary",
    "ood_batch",
    "ood_generalisation",
    "DEFAULT_GAINS",
]

# log-spaced gains 10^-2 ... 10^2 covering the g ranges discussed in App. C.3.3
DEFAULT_GAINS: tuple[float, ...] = tuple(float(10**e) for e in (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0))


def _split_tokens(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`tokenize`: xs [B, K, D] and ys [B, K] from tokens [B, 2K, D+1]."""
    return tokens[:, 0::2, 1:], tokens[:, 1::2, 0]


class RidgePredictor(nn.Module):
    """Ridge regression (Bayes-optimal under t ~ N(0, I_D)) as a predictor with ``predict(tokens)``."""

    def __init__(self, noise_variance: float):
        super().__init__()
        if not noise_variance > 0:
            raise ValueError(f"noise_variance (σ²) must be > 0, got {noise_variance}")
        self.noise_variance = float(noise_variance)

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        xs, ys = _split_tokens(tokens)
        return ridge_predict(xs, ys, self.noise_variance)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(tokens)
        out[:, 0::2, 0] = self.predict(tokens)
        return out


class TaskPriorPredictor(nn.Module):
    """The context-free task-prior prediction ŷ_k = t̄ᵀx_k (C.3.1); t̄ = 0 gives the zero predictor."""

    def __init__(self, mean_task: torch.Tensor):
        super().__init__()
        if mean_task.dim() != 1:
            raise ValueError(f"mean_task (t̄) must be a [D] vector, got shape {tuple(mean_task.shape)}")
        self.register_buffer("mean_task", mean_task.detach().clone())

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        xs, _ = _split_tokens(tokens)
        if xs.shape[-1] != self.mean_task.shape[0]:
            raise ValueError(f"mean_task has D = {self.mean_task.shape[0]} but the tokens have D = {xs.shape[-1]}")
        return xs @ self.mean_task.to(xs.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(tokens)
        out[:, 0::2, 0] = self.predict(tokens)
        return out


def task_prior_mean(task: RegressionTask) -> torch.Tensor:
    """t̄, the component-wise mean task of the training prior (C.3.1): 0 for M = ∞, mean of T_M else."""
    if task.num_tasks is None:
        return torch.zeros(task.task_size)
    return task_set(task).mean(dim=0)


def check_batch(model: nn.Module, batch: RegressionBatch) -> None:
    """Raise ValueError if ``batch`` is malformed or does not fit ``model`` (D, K)."""
    tokens, ys, xs = batch.tokens, batch.ys, batch.xs
    if xs.dim() != 3 or ys.dim() != 2 or tokens.dim() != 3:
        raise ValueError(f"batch must hold tokens [B, 2K, D+1], ys [B, K], xs [B, K, D]; got "
                         f"{tuple(tokens.shape)}, {tuple(ys.shape)}, {tuple(xs.shape)}")
    B, K, D = xs.shape
    if tuple(tokens.shape) != (B, 2 * K, D + 1) or tuple(ys.shape) != (B, K):
        raise ValueError(f"batch is inconsistent: xs {tuple(xs.shape)} needs tokens {(B, 2 * K, D + 1)} and ys "
                         f"{(B, K)}, got {tuple(tokens.shape)} and {tuple(ys.shape)}")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "task_size"):
        if cfg.task_size != D:
            raise ValueError(f"batch has task_size D = {D} but the model was built for task_size D = {cfg.task_size}")
        if K > cfg.max_examples:
            raise ValueError(f"batch has K = {K} examples but the model's max_examples is K = {cfg.max_examples}")


@torch.no_grad()
def predictions(model: nn.Module, batch: RegressionBatch) -> torch.Tensor:
    """ŷ [B, K] of ``model`` on ``batch`` (read at the x_k tokens)."""
    check_batch(model, batch)
    return model.predict(batch.tokens)


def per_token_loss(model: nn.Module, batch: RegressionBatch) -> torch.Tensor:
    """Per-token loss ℓ_k = E_batch[(ŷ_k − y_k)²] for k = 1..K, shape [K] (main paper §6)."""
    return ((predictions(model, batch) - batch.ys) ** 2).mean(dim=0)


def icl_score(losses: torch.Tensor, k1: int, k2: int) -> float:
    """ICL_{k1:k2} = ℓ_{k1} − ℓ_{k2} from per-token losses [K], k 1-indexed (App. C.3.2).

    Positive when the prediction at example k2 is better than at k1 (see the module docstring
    for the sign convention).
    """
    K = losses.shape[-1]
    if not (1 <= k1 < k2 <= K):
        raise ValueError(f"need 1 <= k1 < k2 <= K = {K}, got k1 = {k1}, k2 = {k2}")
    return float(losses[k1 - 1] - losses[k2 - 1])


def icl_scores(model: nn.Module, batch: RegressionBatch) -> dict[str, float]:
    """ICL_{1:D} (locating the task) and ICL_{D:K} (refining it), App. C.3.2 / Fig. C.3."""
    losses = per_token_loss(model, batch)
    D, K = batch.xs.shape[-1], batch.xs.shape[1]
    if not D < K:
        raise ValueError(f"ICL_1:D and ICL_D:K need task_size D < max_examples K, got D = {D}, K = {K}")
    return {"icl_1_D": icl_score(losses, 1, D), "icl_D_K": icl_score(losses, D, K)}


def function_distance(model: nn.Module, batch: RegressionBatch, reference: torch.Tensor,
                      per_token: bool = False) -> torch.Tensor | float:
    """Mean-square function-space distance E[(ŷ_k − ŷ_k^ref)²] to reference predictions [B, K].

    Averaged over the batch and k (a float), or over the batch only (``per_token``, a [K] tensor).
    """
    preds = predictions(model, batch)
    if reference.shape != preds.shape:
        raise ValueError(f"reference predictions must have shape {tuple(preds.shape)}, got {tuple(reference.shape)}")
    sq = (preds - reference) ** 2
    return sq.mean(dim=0) if per_token else float(sq.mean())


def distance_to_zero(model: nn.Module, batch: RegressionBatch, per_token: bool = False) -> torch.Tensor | float:
    """E[ŷ_k²], the distance to the zero prediction (App. C.3.1, Fig. C.2a; Fig. 6a top, LR1 → ~0.1)."""
    return function_distance(model, batch, torch.zeros_like(batch.ys), per_token)


def distance_to_task_prior(model: nn.Module, batch: RegressionBatch, mean_task: torch.Tensor | None = None,
                           per_token: bool = False) -> torch.Tensor | float:
    """E[(ŷ_k − t̄ᵀx_k)²], the distance to the task-prior prediction (App. C.3.1, Fig. C.2b).

    ``mean_task`` is t̄ (see :func:`task_prior_mean`); None means t̄ = 0, the Gaussian prior's mean.
    """
    D = batch.xs.shape[-1]
    mean_task = torch.zeros(D) if mean_task is None else mean_task
    if mean_task.shape != (D,):
        raise ValueError(f"mean_task (t̄) must have shape ({D},) to match the batch's D, got {tuple(mean_task.shape)}")
    return function_distance(model, batch, batch.xs @ mean_task.to(batch.xs.dtype), per_token)


def distance_to_ridge(model: nn.Module, batch: RegressionBatch, noise_variance: float,
                      per_token: bool = False) -> torch.Tensor | float:
    """E[(ŷ_k − ŷ_k^ridge)²], function-space distance to ridge regression with ridge σ² (Carroll et al.)."""
    return function_distance(model, batch, ridge_predict(batch.xs, batch.ys, noise_variance), per_token)


def distance_to_dmmse(model: nn.Module, batch: RegressionBatch, tasks: torch.Tensor, noise_variance: float,
                      per_token: bool = False) -> torch.Tensor | float:
    """E[(ŷ_k − ŷ_k^dMMSE)²], distance to the discrete-MMSE predictor on the task set ``tasks`` [M, D]."""
    return function_distance(model, batch, dmmse_predict(batch.xs, batch.ys, tasks, noise_variance), per_token)


def behaviour_summary(model: nn.Module, batch: RegressionBatch, noise_variance: float,
                      mean_task: torch.Tensor | None = None) -> dict[str, float]:
    """The scalar behavioural probes from one forward pass: ``loss``, ``icl_1_D``, ``icl_D_K``
    (C.3.2), ``distance_to_zero``, ``distance_to_task_prior`` (C.3.1) and ``distance_to_ridge``.

    Same values as the separate probes, which each run the model again.
    """
    preds = predictions(model, batch)
    D, K = batch.xs.shape[-1], batch.xs.shape[1]
    if not D < K:
        raise ValueError(f"ICL_1:D and ICL_D:K need task_size D < max_examples K, got D = {D}, K = {K}")
    mean_task = torch.zeros(D) if mean_task is None else mean_task
    if mean_task.shape != (D,):
        raise ValueError(f"mean_task (t̄) must have shape ({D},) to match the batch's D, got {tuple(mean_task.shape)}")
    losses = ((preds - batch.ys) ** 2).mean(dim=0)
    ridge = ridge_predict(batch.xs, batch.ys, noise_variance)
    return {
        "loss": float(losses.mean()),
        "icl_1_D": icl_score(losses, 1, D),
        "icl_D_K": icl_score(losses, D, K),
        "distance_to_zero": float((preds**2).mean()),
        "distance_to_task_prior": float(((preds - batch.xs @ mean_task.to(batch.xs.dtype)) ** 2).mean()),
        "distance_to_ridge": float(((preds - ridge) ** 2).mean()),
    }


def _check_gain(gain: float) -> float:
    try:
        g = float(gain)
    except (TypeError, ValueError):
        raise ValueError(f"gain (g) must be a finite number > 0, got {gain!r}") from None
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"gain (g) must be a finite number > 0, got {gain!r}")
    return g


def ood_batch(batch: RegressionBatch, gain: float, kind: str) -> RegressionBatch:
    """The same sequences with inputs x_k ~ N(0, gI) (``kind="inputs"``, eq. 14) or tasks
    t ~ N(0, gI) (``kind="tasks"``, eq. 15) — App. C.3.3.

    The batch's own draws are rescaled by √g and the observation noise y − tᵀx is kept, so every
    gain (and every checkpoint) sees common random numbers and g = 1 returns the batch unchanged.
    """
    gain = _check_gain(gain)
    if kind not in ("inputs", "tasks"):
        raise ValueError(f"kind must be 'inputs' or 'tasks', got {kind!r}")
    noise = batch.ys - torch.einsum("bkd,bd->bk", batch.xs, batch.tasks)
    xs, tasks = batch.xs, batch.tasks
    if kind == "inputs":
        xs = xs * gain**0.5
    else:
        tasks = tasks * gain**0.5
    ys = torch.einsum("bkd,bd->bk", xs, tasks) + noise
    return RegressionBatch(tokenize(xs, ys), ys, xs, tasks)


def ood_generalisation(model: nn.Module, batch: RegressionBatch, gains: Iterable[float] = DEFAULT_GAINS,
                       kinds: Sequence[str] = ("inputs", "tasks"),
                       mean_task: torch.Tensor | None = None) -> pd.DataFrame:
    """OOD generalisation over a grid of gains g (App. C.3.3, Fig. C.4; Fig. 6a).

    Returns one row per (kind, gain) with columns ``kind``, ``gain``, ``loss`` (mean over k),
    ``baseline_loss`` (the task-prior prediction t̄ᵀx on the same OOD batch; t̄ = ``mean_task``,
    default 0), ``normalised_loss`` = loss / baseline_loss, ``loss_over_g2`` = loss / g² (Fig. C.4's
    literal normalisation) and ``mean_abs_prediction`` = E|ŷ_k|.
    """
    gains = [_check_gain(g) for g in gains]
    if not gains:
        raise ValueError("gains must hold at least one gain g > 0")
    check_batch(model, batch)
    D = batch.xs.shape[-1]
    mean_task = torch.zeros(D) if mean_task is None else mean_task
    rows = []
    for kind in kinds:
        for g in gains:
            ood = ood_batch(batch, g, kind)
            preds = predictions(model, ood)
            loss = float(((preds - ood.ys) ** 2).mean())
            baseline = float(((ood.xs @ mean_task.to(ood.xs.dtype) - ood.ys) ** 2).mean())
            rows.append({
                "kind": kind, "gain": g, "loss": loss, "baseline_loss": baseline,
                "normalised_loss": loss / baseline, "loss_over_g2": loss / g**2,
                "mean_abs_prediction": float(preds.abs().mean()),
            })
    return pd.DataFrame(rows)
