"""Ideal in-context predictors: ridge regression and the discrete MMSE predictor dMMSE_M.

Carroll et al. (transient ridge; papers/icl-regression-...-code-session.txt §3): for sequences
with y_k = tᵀx_k + N(0, σ²),

* ``ridge``: Bayes-optimal under q_∞ = N(0, I_D):
  t̂_k = (X_{<k}ᵀX_{<k} + σ² I_D)⁻¹ X_{<k}ᵀ Y_{<k}, with t̂_1 = 0.
* ``dMMSE_M``: Bayes-optimal under the uniform prior on T_M = {t_1, ..., t_M}:
  t̂_k = Σ_m w_m t_m / Σ_m w_m,  w_m = exp(−(1/2σ²) Σ_{j<k} (y_j − t_mᵀx_j)²),
  computed as a softmax in log space, so any M (up to 2^15 and beyond) is exact without overflow.

Both return ŷ_k = t̂_kᵀ x_k for every prefix k = 1..K at once, vectorised over the batch.
"""

from __future__ import annotations

import torch

__all__ = ["ridge_predict", "dmmse_predict", "ridge_task_estimates", "dmmse_task_estimates"]


def _check(xs: torch.Tensor, ys: torch.Tensor, noise_variance: float) -> None:
    if xs.dim() != 3 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise ValueError(f"xs must be [B, K, D] and ys [B, K]; got {tuple(xs.shape)} and {tuple(ys.shape)}")
    if not noise_variance > 0:
        raise ValueError(f"noise_variance (σ²) must be > 0 for the ideal predictors, got {noise_variance}")


def _exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """out_k = Σ_{j<k} x_j along ``dim`` (out_1 = 0). Summed directly rather than as cumsum − x,
    which cancels catastrophically in float32 when the terms are large (huge residuals)."""
    x = x.movedim(dim, -1)
    out = torch.cat([torch.zeros_like(x[..., :1]), torch.cumsum(x[..., :-1], dim=-1)], dim=-1)
    return out.movedim(-1, dim)


def ridge_task_estimates(xs: torch.Tensor, ys: torch.Tensor, noise_variance: float) -> torch.Tensor:
    """Posterior-mean task t̂_k under N(0, I_D) from the first k−1 examples, shape [B, K, D]."""
    _check(xs, ys, noise_variance)
    B, K, D = xs.shape
    outer = xs.unsqueeze(-1) * xs.unsqueeze(-2)  # [B, K, D, D]
    # exclusive cumulative sums: prefix k uses examples j < k
    gram = _exclusive_cumsum(outer, dim=1)
    rhs = _exclusive_cumsum(ys.unsqueeze(-1) * xs, dim=1)  # [B, K, D]
    eye = torch.eye(D, dtype=xs.dtype, device=xs.device)
    return torch.linalg.solve(gram + noise_variance * eye, rhs.unsqueeze(-1)).squeeze(-1)


def ridge_predict(xs: torch.Tensor, ys: torch.Tensor, noise_variance: float) -> torch.Tensor:
    """Ridge predictions ŷ_k = t̂_kᵀ x_k for every k, shape [B, K] (ŷ_1 = 0)."""
    return (ridge_task_estimates(xs, ys, noise_variance) * xs).sum(-1)


def dmmse_task_estimates(
    xs: torch.Tensor, ys: torch.Tensor, tasks: torch.Tensor, noise_variance: float, chunk_elements: int = 2**24
) -> torch.Tensor:
    """Posterior-mean task under Uniform(T_M), ``tasks`` = T_M as [M, D]; shape [B, K, D].

    Works in chunks of the batch so that memory stays near ``chunk_elements`` floats for any M.
    """
    _check(xs, ys, noise_variance)
    if tasks.dim() != 2 or tasks.shape[1] != xs.shape[2]:
        raise ValueError(f"tasks must be [M, D] with D = {xs.shape[2]}, got {tuple(tasks.shape)}")
    if len(tasks) < 1:
        raise ValueError("tasks must hold at least one task (M >= 1), got an empty task set")
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
    B, K, D = xs.shape
    M = len(tasks)
    step = max(1, chunk_elements // (M * K))
    out = []
    for lo in range(0, B, step):
        x, y = xs[lo:lo + step], ys[lo:lo + step]
        resid2 = (y.unsqueeze(1) - torch.einsum("bkd,md->bmk", x, tasks)) ** 2  # [b, M, K]
        # exclusive cumulative sum over k: prefix k sees residuals of examples j < k
        sse = _exclusive_cumsum(resid2, dim=-1)
        weights = torch.softmax(-sse / (2 * noise_variance), dim=1)  # [b, M, K]
        out.append(torch.einsum("bmk,md->bkd", weights, tasks))
    return torch.cat(out)


def dmmse_predict(
    xs: torch.Tensor, ys: torch.Tensor, tasks: torch.Tensor, noise_variance: float
) -> torch.Tensor:
    """dMMSE_M predictions ŷ_k for every k, shape [B, K]."""
    return (dmmse_task_estimates(xs, ys, tasks, noise_variance) * xs).sum(-1)
