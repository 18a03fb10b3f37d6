"""Language-model probes (main paper §5, App. B).

So far: the n-gram entropies that set the reference levels of stage LM1 (the model learns bigram
statistics; its loss approaches the bigram conditional entropy plus ~0.3 nats, App. B.1), and
per-position validation loss (the basis of the ICL score, App. B.3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NgramEntropies", "ngram_entropies", "per_position_loss"]


@dataclass(frozen=True)
class NgramEntropies:
    """Entropies in nats of the empirical unigram distribution and of next token given current."""

    unigram: float
    bigram: float
    num_tokens: int


def ngram_entropies(stream: torch.Tensor, d_vocab: int) -> NgramEntropies:
    """H(t) and H(t_{k+1} | t_k) of a token stream, from counts (plug-in estimates).

    The bigram conditional entropy is the loss of the best model that sees only the current token,
    the level stage LM1 approaches.
    """
    ids = torch.as_tensor(stream).reshape(-1).to(torch.int64).numpy()
    if ids.size < 2:
        raise ValueError(f"stream must hold at least 2 tokens, got {ids.size}")
    if ids.min() < 0 or ids.max() >= d_vocab:
        raise ValueError(f"token ids must lie in [0, d_vocab={d_vocab}), got [{ids.min()}, {ids.max()}]")
    uni = np.bincount(ids, minlength=d_vocab).astype(np.float64)
    p = uni[uni > 0] / uni.sum()
    h_uni = float(-(p * np.log(p)).sum())
    pairs = np.bincount(ids[:-1] * d_vocab + ids[1:])
    nz = np.nonzero(pairs)[0]
    counts = pairs[nz].astype(np.float64)
    prev = np.bincount(ids[:-1], minlength=d_vocab).astype(np.float64)
    cond = counts / prev[nz // d_vocab]
    h_bi = float(-(counts * np.log(cond)).sum() / counts.sum())
    return NgramEntropies(h_uni, h_bi, int(ids.size))


@torch.no_grad()
def per_position_loss(model, tokens: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Mean next-token loss at each position k (predicting token k+1), shape [n_ctx - 1]."""
    from stagewise.models.language import per_token_loss

    tokens = torch.as_tensor(tokens).long()
    total = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    for lo in range(0, len(tokens), batch_size):
        chunk = tokens[lo:lo + batch_size]
        total += per_token_loss(model(chunk, return_type="logits"), chunk).double().sum(0)
    return (total / len(tokens)).float()
