"""Structural probes of the regression transformer (main paper App. C.4).

Weight probes read parameters of :class:`~stagewise.models.regression.RegressionTransformer` by
name (``token_embedding.weight`` [d, D+1], ``pos_embedding`` [2K, d], ``unembedding.weight``
[D+1, d], the ``nn.LayerNorm`` modules); attention probes read ``model.attention_patterns``.
Nothing is modified; everything runs under ``torch.no_grad``.

Choices where the paper is ambiguous:

* "Effective rank" of an embedding (C.4.1, C.4.2: "effectively losing singular values") is not
  defined in the paper; we use exp(entropy of σ_i / Σσ) (Roy & Vetterli, 2007), and also give the
  fraction of variance σ_i² / Σσ² the paper quotes for the token embedding.
* Fig. C.5c's caption compares the rows of W_embed with the span of W_unembed, while the text of
  C.4.2 says the *positional* embedding; :func:`embedding_alignment` offers both (``other=``).
* Attention entropy (eq. 16) is in bits. Its normalisation by log₂(k) (eq. 17) is 0/0 at the first
  position k = 1, which we leave out (NaN per position, skipped in averages). Following D.2.2 the
  final y token is left out as a query position in the per-head summaries; following C.4.5 each
  head is split into its x-token part and y-token part (query positions 2k and 2k+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn

from stagewise.data.regression import RegressionBatch
from stagewise.probes.regression_behaviour import check_batch

__all__ = [
    "embedding_singular_values",
    "positional_embedding_singular_values",
    "positional_embedding_norms",
    "effective_rank",
    "explained_variance",
    "subspace_cosines",
    "principal_angle_cosines",
    "embedding_alignment",
    "UnembeddingWeights",
    "unembedding_weights",
    "small_weight_fraction",
    "layer_norm_collapse",
    "unembedding_collapse",
    "attention_entropy",
    "attention_variability",
    "mean_attention_patterns",
    "attention_head_scores",
]

SMALL_WEIGHT_THRESHOLD = 0.1  # Fig. C.7 inset: fraction of weights with |w| < 0.1


# --- C.4.1, C.4.2: embedding and positional-embedding collapse -----------------------------------

@torch.no_grad()
def embedding_singular_values(model: nn.Module) -> torch.Tensor:
    """The D+1 singular values of the token embedding W_E: R^{D+1} → R^d, descending (C.4.1, Fig. C.5a)."""
    return torch.linalg.svdvals(model.token_embedding.weight.detach())


@torch.no_grad()
def positional_embedding_singular_values(model: nn.Module) -> torch.Tensor:
    """Singular values of the positional embedding [2K, d], descending (C.4.2, Fig. C.5b)."""
    return torch.linalg.svdvals(model.pos_embedding.detach())


@torch.no_grad()
def positional_embedding_norms(model: nn.Module) -> torch.Tensor:
    """‖p_i‖ for each position i = 0..2K−1, shape [2K] (C.4.2)."""
    return model.pos_embedding.detach().norm(dim=-1)


def explained_variance(singular_values: torch.Tensor) -> torch.Tensor:
    """σ_i² / Σ_j σ_j², the fraction of variance per component (C.4.1 quotes 2.9% vs ~24%)."""
    sq = singular_values**2
    return sq / sq.sum()


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp(H(p)), p_i = σ_i / Σσ (Roy & Vetterli): d for d equal singular values, 1 for rank one."""
    if singular_values.dim() != 1 or (singular_values < 0).any():
        raise ValueError("singular_values must be a 1-D tensor of non-negative values")
    total = singular_values.sum()
    if total == 0:
        return 0.0
    p = singular_values / total
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def _row_space_basis(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [r, d] of the row space of ``matrix`` [m, d] (numerical rank r)."""
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return matrix.new_zeros(0, matrix.shape[-1])
    tol = s[0] * max(matrix.shape) * torch.finfo(matrix.dtype).eps
    return vh[s > tol]


def subspace_cosines(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """cos ∠(v_i, P v_i) = ‖P v_i‖ / ‖v_i‖ for each row v_i of ``vectors`` [n, d], with P the
    orthogonal projection onto the row space of ``basis`` [m, d]; shape [n] (Fig. C.5c).

    1 when v_i lies in the subspace, 0 when orthogonal to it; NaN for a zero vector.
    """
    if vectors.dim() != 2 or basis.dim() != 2 or vectors.shape[1] != basis.shape[1]:
        raise ValueError(f"vectors [n, d] and basis [m, d] must share d; got {tuple(vectors.shape)}, {tuple(basis.shape)}")
    q = _row_space_basis(basis)
    proj_norm = (vectors @ q.T).norm(dim=-1)
    return proj_norm / vectors.norm(dim=-1)


def principal_angle_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the row spaces of ``a`` [n, d] and ``b`` [m, d],
    descending, min(rank a, rank b) of them (singular values of Q_a Q_bᵀ)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a [n, d] and b [m, d] must share d; got {tuple(a.shape)}, {tuple(b.shape)}")
    qa, qb = _row_space_basis(a), _row_space_basis(b)
    if len(qa) == 0 or len(qb) == 0:
        return a.new_zeros(0)
    return torch.linalg.svdvals(qa @ qb.T).clamp(max=1.0)


@torch.no_grad()
def embedding_alignment(model: nn.Module, other: str = "unembedding") -> torch.Tensor:
    """Cosine between each of the D+1 token-embedding vectors (columns of W_E, i.e. the residual
    directions each token component writes to) and its projection onto the residual subspace
    read by the unembedding (rows of W_U, ``other="unembedding"``, Fig. C.5c caption) or spanned by
    the positional embedding (rows of ``pos_embedding``, ``other="positional"``, C.4.2 text).
    Shape [D+1]."""
    spans = {"unembedding": model.unembedding.weight, "positional": model.pos_embedding}
    if other not in spans:
        raise ValueError(f"other must be one of {sorted(spans)}, got {other!r}")
    return subspace_cosines(model.token_embedding.weight.detach().T, spans[other].detach())


# --- C.4.3, C.4.4: unembedding and layer-norm collapse -------------------------------------------

@dataclass(frozen=True)
class UnembeddingWeights:
    """The y read-out of App. C.4.3: π_y[W_U(LN(z)) + b_U] with LN weight γ and bias β."""

    ln_weight: torch.Tensor  # γ [d]
    ln_bias: torch.Tensor  # β [d]
    readout_weight: torch.Tensor  # (W_U)[0, :] [d]
    readout_bias: float  # (b_U)[0]
    effective_weight: torch.Tensor  # W̃_U = (W_U)[0, :] ⊙ γ [d]
    effective_bias: float  # b̃_U = (W_U)[0, :] · β + (b_U)[0]


@torch.no_grad()
def unembedding_weights(model: nn.Module) -> UnembeddingWeights:
    """γ, β, the y row of the unembedding and the effective weights W̃_U, b̃_U (App. C.4.3, Fig. C.6)."""
    gamma = model.ln_final.weight.detach().clone()
    beta = model.ln_final.bias.detach().clone()
    w0 = model.unembedding.weight[0].detach().clone()
    b0 = float(model.unembedding.bias[0])
    return UnembeddingWeights(gamma, beta, w0, b0, w0 * gamma, float(w0 @ beta) + b0)


def small_weight_fraction(weights: torch.Tensor, threshold: float = SMALL_WEIGHT_THRESHOLD) -> float:
    """Fraction of entries with |w| < ``threshold`` (strict), Fig. C.7 inset."""
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if weights.numel() == 0:
        raise ValueError("weights is empty")
    return float((weights.detach().abs() < threshold).float().mean())


@torch.no_grad()
def layer_norm_collapse(model: nn.Module, threshold: float = SMALL_WEIGHT_THRESHOLD) -> pd.DataFrame:
    """One row per LayerNorm (``blocks.{l}.ln_attn``, ``blocks.{l}.ln_mlp``, ``ln_final``), App. C.4.4 /
    Fig. C.7: mean, std and norm of the weights γ and biases β, and the fractions below ``threshold``."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            w, b = module.weight.detach(), module.bias.detach()
            rows.append({
                "layer_norm": name,
                "weight_mean": float(w.mean()), "weight_std": float(w.std()), "weight_norm": float(w.norm()),
                "frac_small_weight": small_weight_fraction(w, threshold),
                "bias_mean": float(b.mean()), "bias_std": float(b.std()),
                "frac_small_bias": small_weight_fraction(b, threshold),
            })
    if not rows:
        raise ValueError("model has no nn.LayerNorm modules with weights")
    return pd.DataFrame(rows)


def unembedding_collapse(model: nn.Module, threshold: float = SMALL_WEIGHT_THRESHOLD) -> dict[str, float]:
    """Fractions of small final-LN weights γ, y read-out weights (W_U)[0,:] and effective weights W̃_U
    (App. C.4.3, Fig. C.6), with their norms."""
    u = unembedding_weights(model)
    return {
        "frac_small_ln_weight": small_weight_fraction(u.ln_weight, threshold),
        "frac_small_readout": small_weight_fraction(u.readout_weight, threshold),
        "frac_small_effective": small_weight_fraction(u.effective_weight, threshold),
        "ln_weight_norm": float(u.ln_weight.norm()),
        "readout_norm": float(u.readout_weight.norm()),
        "effective_norm": float(u.effective_weight.norm()),
    }


# --- C.4.5: attention collapse ----------------------------------------------------------------------

def attention_entropy(patterns: torch.Tensor, normalised: bool = False) -> torch.Tensor:
    """Attention entropy H_k = −Σ_{k'≤k} α_{k,k'} log₂ α_{k,k'} (eq. 16) per query position, for
    patterns [..., T, T] (rows sum to 1); shape [..., T].

    ``normalised`` divides by log₂(k), k = query position + 1 (eq. 17); the first position (0/0)
    is NaN.
    """
    if patterns.dim() < 2 or patterns.shape[-1] != patterns.shape[-2]:
        raise ValueError(f"patterns must be [..., T, T], got {tuple(patterns.shape)}")
    h = -torch.special.xlogy(patterns, patterns).sum(dim=-1) / torch.log(torch.tensor(2.0, dtype=patterns.dtype))
    if not normalised:
        return h
    k = torch.arange(1, patterns.shape[-1] + 1, dtype=patterns.dtype, device=patterns.device)
    max_h = torch.log2(k)
    return torch.where(max_h > 0, h / max_h.clamp(min=1e-30), torch.full_like(h, float("nan")))


def attention_variability(patterns: torch.Tensor) -> torch.Tensor:
    """Attention variability (eq. 18, Vig & Belinkov) of patterns [n, ..., T, T] over the sample
    dimension 0, per query position k, shape [..., T]:

        V_k = Σ_i Σ_{k'≤k} |α_{k,k'}(S_i) − ᾱ_{k,k'}| / (2n Σ_{k'≤k} ᾱ_{k,k'}) ∈ [0, 1].
    """
    if patterns.dim() < 3 or patterns.shape[-1] != patterns.shape[-2]:
        raise ValueError(f"patterns must be [n, ..., T, T], got {tuple(patterns.shape)}")
    mean = patterns.mean(dim=0)
    n = patterns.shape[0]
    return (patterns - mean).abs().sum(dim=(0, -1)) / (2 * n * mean.sum(dim=-1))


@torch.no_grad()
def mean_attention_patterns(model: nn.Module, batch: RegressionBatch) -> torch.Tensor:
    """Attention patterns averaged over the batch, [L, H, T, T] (App. C.4.5, Fig. C.10)."""
    check_batch(model, batch)
    return model.attention_patterns(batch.tokens).mean(dim=0)


@torch.no_grad()
def attention_head_scores(model: nn.Module, batch: RegressionBatch) -> pd.DataFrame:
    """Per-head attention entropy and variability, split into x and y parts (App. C.4.5, Figs. C.8, C.9).

    One row per (layer, head, token ∈ {x, y}) with ``label`` as in the paper (1-indexed, e.g.
    ``B1H3y``), ``entropy`` (bits, eq. 16), ``normalised_entropy`` (eq. 17) and ``variability``
    (eq. 18), each averaged over the batch and over that head part's query positions; the final
    y token is left out (App. D.2.2) and position 0 from ``normalised_entropy``.
    """
    check_batch(model, batch)
    pats = model.attention_patterns(batch.tokens)  # [B, L, H, T, T]
    T = pats.shape[-1]
    ent = attention_entropy(pats)  # [B, L, H, T]
    max_ent = torch.log2(torch.arange(1, T + 1, dtype=ent.dtype))
    norm_ent = (ent[..., 1:] / max_ent[1:]).mean(dim=0)  # eq. 17 from position 1 on (k = 2, ...)
    ent = ent.mean(dim=0)
    var = attention_variability(pats)  # [L, H, T]
    positions = {"x": torch.arange(0, T, 2), "y": torch.arange(1, T - 1, 2)}  # drops the last y token
    rows = []
    for layer in range(pats.shape[1]):
        for head in range(pats.shape[2]):
            for part, pos in positions.items():
                if len(pos) == 0:
                    continue
                rows.append({
                    "layer": layer, "head": head, "token": part, "label": f"B{layer + 1}H{head + 1}{part}",
                    "entropy": float(ent[layer, head, pos].mean()),
                    "normalised_entropy": float(norm_ent[layer, head, pos[pos > 0] - 1].mean()),
                    "variability": float(var[layer, head, pos].mean()),
                })
    return pd.DataFrame(rows)
