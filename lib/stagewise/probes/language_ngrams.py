"""Bigram and n-gram probes of the language model (main paper §5.1-5.2, App. B.3.1-B.3.2).

* bigram score B̄ (eqs. 11-12) against the empirical bigram distribution q̃(t'|t) of the training
  stream, and its optimum, the conditional bigram entropy at the same positions (stage LM1);
* n-gram scores ℓ^n_test / ℓ^n_gram on the common n-grams of the GPT-2 vocabulary (stage LM2).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from stagewise.probes.language_behaviour import (_check_batch_size, _check_tokens, _validation_pass,
                                                 default_bos_id)

__all__ = [
    "BigramDistribution",
    "BigramScore",
    "bigram_distribution",
    "bigram_cross_entropy",
    "bigram_score",
    "common_ngrams",
    "ngram_final_token_loss",
    "ngram_scores",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Bigram score, eqs. (11)-(12)


@dataclass(frozen=True, eq=False)
class BigramDistribution:
    """Empirical conditional bigram distribution q̃(t' | t) of a token stream (App. B.3.1), sparse.

    Row ``t`` (CSR): successors ``col[crow[t]:crow[t+1]]`` with probabilities ``prob[...]``.
    ``entropy[t]`` is H(q̃(·|t)) in nats (NaN where ``t`` never has a successor in the stream).
    """

    crow: np.ndarray
    col: np.ndarray
    prob: np.ndarray
    entropy: np.ndarray
    num_tokens: int
    digest: str

    @property
    def d_vocab(self) -> int:
        return len(self.crow) - 1

    @property
    def has_successor(self) -> np.ndarray:
        return np.diff(self.crow) > 0

    def dense(self) -> np.ndarray:
        """q̃ as a dense [d_vocab, d_vocab] array (small vocabularies / tests only)."""
        out = np.zeros((self.d_vocab, self.d_vocab))
        rows = np.repeat(np.arange(self.d_vocab), np.diff(self.crow))
        out[rows, self.col] = self.prob
        return out


def bigram_distribution(stream, d_vocab: int) -> BigramDistribution:
    """Count the bigrams (t_k, t_{k+1}) of ``stream`` and normalise each row: q̃(t'|t) (App. B.3.1).

    The paper counts "instances of bigrams over the training data"; pass the training token stream
    (:func:`stagewise.data.language.load_token_stream`; BOS separates its documents, so BOS -> first
    token and last token -> BOS transitions are counted like any other).
    """
    if not isinstance(d_vocab, int) or d_vocab < 2:
        raise ValueError(f"d_vocab must be an integer >= 2, got {d_vocab!r}")
    ids = torch.as_tensor(stream).reshape(-1).to(torch.int64).numpy()
    if ids.size < 2:
        raise ValueError(f"stream must hold at least 2 tokens, got {ids.size}")
    if ids.min() < 0 or ids.max() >= d_vocab:
        raise ValueError(f"stream ids must lie in [0, d_vocab={d_vocab}), got [{ids.min()}, {ids.max()}]")
    pairs = ids[:-1] * d_vocab + ids[1:]
    if d_vocab * d_vocab <= 1 << 27:  # dense counting is ~3x faster than sorting at the 5k vocabulary
        counts_all = np.bincount(pairs, minlength=d_vocab * d_vocab)
        keys = np.flatnonzero(counts_all)
        counts = counts_all[keys]
        del counts_all
    else:
        keys, counts = np.unique(pairs, return_counts=True)
    rows, col = keys // d_vocab, keys % d_vocab
    row_total = np.bincount(rows, weights=counts, minlength=d_vocab)
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=d_vocab))]).astype(np.int64)
    prob = counts / row_total[rows]
    ent = np.full(d_vocab, np.nan)
    plogp = np.bincount(rows, weights=-prob * np.log(prob), minlength=d_vocab)
    ent[row_total > 0] = plogp[row_total > 0]
    digest = hashlib.sha256(np.ascontiguousarray(keys).tobytes() + np.ascontiguousarray(counts).tobytes()).hexdigest()[:16]
    return BigramDistribution(crow, col.astype(np.int64), prob, ent, int(ids.size), digest)


def bigram_cross_entropy(log_probs: Tensor, current: Tensor, bigrams: BigramDistribution) -> Tensor:
    """B_k^S of eq. (11) for each row: -Σ_i q̃(t^(i) | t_k) log p(t^(i) | S_<=k), float64 [m].

    ``log_probs`` [m, d_vocab] are the model's next-token log-probabilities at the sampled
    positions, ``current`` [m] the tokens t_k there. Only the non-zero entries of each row of q̃
    are touched (sparse gather), so the cost is the rows' support, not m × d_vocab.
    """
    if log_probs.dim() != 2 or log_probs.shape[1] != bigrams.d_vocab:
        raise ValueError(f"log_probs must have shape [m, d_vocab={bigrams.d_vocab}], got {tuple(log_probs.shape)}")
    cur = torch.as_tensor(current).reshape(-1).long().numpy()
    if cur.shape[0] != log_probs.shape[0]:
        raise ValueError(f"current must hold one token per row of log_probs ({log_probs.shape[0]}), got {cur.shape[0]}")
    if not bigrams.has_successor[cur].all():
        bad = np.unique(cur[~bigrams.has_successor[cur]])[:5]
        raise ValueError(f"current holds tokens without any successor in the bigram stream (e.g. {bad.tolist()}): "
                         "q̃(·|t) is undefined there")
    starts = bigrams.crow[cur]
    lengths = bigrams.crow[cur + 1] - starts
    sample = np.repeat(np.arange(len(cur)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    entry = np.repeat(starts, lengths) + offsets
    sample_t = torch.from_numpy(sample)
    lp = log_probs[sample_t, torch.from_numpy(bigrams.col[entry])].double()
    weighted = -torch.from_numpy(bigrams.prob[entry]) * lp
    return torch.zeros(len(cur), dtype=torch.float64).index_add_(0, sample_t, weighted)


@dataclass(frozen=True)
class BigramScore:
    """B̄ of eq. (12) and its optimum, the mean of H(q̃(·|t_k)) over the same sampled positions."""

    score: float
    optimum: float
    num_samples: int


def _sample_positions(tokens: Tensor, bigrams: BigramDistribution, num_samples: int, seed: int) -> Tensor:
    """``num_samples`` distinct (sequence, k) pairs, k in 1 .. T-2, uniform among positions whose t_k
    has a row in q̃. k = 0 (BOS) is left out: a packed context's BOS precedes a mid-document token,
    not the document starts that q̃(·|BOS) counts in the stream."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if tokens.shape[1] < 3:
        raise ValueError(f"tokens need at least 3 positions for the bigram score, got {tokens.shape[1]}")
    ok = torch.from_numpy(bigrams.has_successor)[tokens[:, 1:-1]]
    candidates = ok.reshape(-1).nonzero().squeeze(1)
    if num_samples > len(candidates):
        raise ValueError(f"num_samples ({num_samples}) exceeds the {len(candidates)} usable positions of tokens "
                         f"{tuple(tokens.shape)}")
    dropped = ok.numel() - len(candidates)
    if dropped:
        log.info("bigram score: %d of %d positions have a current token with no successor in the bigram "
                 "stream and are not sampled", dropped, ok.numel())
    g = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:num_samples]].sort().values
    width = tokens.shape[1] - 2
    return torch.stack([chosen // width, chosen % width + 1], dim=1)


def bigram_score(model, tokens, bigrams: BigramDistribution, num_samples: int = 5000, seed: int = 0,
                 batch_size: int = 16) -> BigramScore:
    """Average bigram score B̄ (eq. 12) over ``num_samples`` fixed random (S_i, k_i) of ``tokens``.

    The paper uses n = 5,000 positions of validation sequences; the optimum reported beside it is
    "the bigram distribution entropy itself, averaged over the validation set" (here: at the same
    positions). Positions k >= 1 only (see ``_sample_positions``); positions whose current token
    never has a successor in the bigram stream are not sampled (q̃(·|t) is undefined there; their
    number is logged).
    """
    tokens = _check_tokens(model, tokens)
    _check_batch_size(batch_size)
    if bigrams.d_vocab != model.cfg.d_vocab:
        raise ValueError(f"bigrams has d_vocab {bigrams.d_vocab} but the model has {model.cfg.d_vocab}")
    samples = _sample_positions(tokens, bigrams, num_samples, seed)
    _, b = _validation_pass(model, tokens, batch_size, samples=samples,
                            sample_fn=partial(bigram_cross_entropy, bigrams=bigrams))
    optimum = bigrams.entropy[tokens[samples[:, 0], samples[:, 1]].numpy()].mean()
    return BigramScore(float(b.mean()), float(optimum), int(len(samples)))


# ------------------------------------------------------------------------------------------------
# n-gram scores, App. B.3.2


@lru_cache(maxsize=1)
def _gpt2_ngrams_all() -> tuple[tuple[int, ...], ...]:
    from stagewise.data.tokenizer import gpt2_vocabulary_ngrams

    return tuple(tuple(g) for g in gpt2_vocabulary_ngrams(n=None))


def common_ngrams(n: int, count: int = 1000) -> Tensor:
    """The first ``count`` n-grams of the GPT-2 vocabulary as tokenized by the 5k tokenizer [count, n].

    App. B.3.2: "We first tokenize the tokens in the full GPT-2 vocabulary to get a list of 50,257
    n-grams [...] We then define the set of common n-grams as the first 1,000 n-grams that appear
    in this list for a fixed n, n >= 2." (Tokenizing the vocabulary takes ~2 s, once per process.)
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    grams = [g for g in _gpt2_ngrams_all() if len(g) == n][:count]
    if len(grams) < count:
        raise ValueError(f"count ({count}) exceeds the {len(grams)} {n}-grams of the GPT-2 vocabulary")
    return torch.tensor(grams, dtype=torch.long)


@torch.no_grad()
def ngram_final_token_loss(model, ngrams, bos_id: int | None = None, batch_size: int = 1024) -> float:
    """ℓ^n_gram: mean loss of predicting each n-gram's last token from ``[BOS, g_1, ..., g_{n-1}]``.

    The n-gram sits where a validation sequence's first n tokens sit (after BOS), so its last token
    is token n of the sequence, the token ℓ^n_test is measured at. Only that prediction is unembedded.
    """
    _check_batch_size(batch_size)
    ngrams = torch.as_tensor(ngrams).long()
    if ngrams.dim() != 2 or ngrams.shape[1] < 2 or ngrams.shape[0] < 1:
        raise ValueError(f"ngrams must have shape [count >= 1, n >= 2], got {tuple(ngrams.shape)}")
    bos = default_bos_id(model) if bos_id is None else bos_id
    seqs = torch.cat([torch.full((len(ngrams), 1), bos, dtype=torch.long), ngrams], dim=1)
    _check_tokens(model, seqs, "ngrams")
    total = 0.0
    for lo in range(0, len(seqs), batch_size):
        chunk = seqs[lo:lo + batch_size]
        resid = model(chunk[:, :-1], stop_at_layer=model.cfg.n_layers)[:, -1:]
        logits = model.unembed(model.ln_final(resid))[:, 0]
        total += F.cross_entropy(logits.float(), chunk[:, -1], reduction="sum").item()
    return total / len(seqs)


def ngram_scores(model, tokens, ngrams: dict[int, Tensor], bos_id: int | None = None, batch_size: int = 16,
                 test_losses: Tensor | None = None) -> pd.DataFrame:
    """n-gram scores ℓ^n_test / ℓ^n_gram of App. B.3.2, one row per n (index ``n``).

    ``ngrams[n]`` is the set of common n-grams ([count, n], e.g. :func:`common_ngrams`); ℓ^n_test is
    the mean loss at position n of the validation sequences ``tokens`` (BOS-prefixed). A score above
    1 means the model predicts the n-grams' last tokens better than typical tokens at the same
    position. ``test_losses``: per-token losses [N, T-1] of ``tokens`` already computed.
    """
    if not ngrams:
        raise ValueError("ngrams must hold at least one n")
    tokens = _check_tokens(model, tokens)
    n_max = max(ngrams)
    if n_max >= tokens.shape[1]:
        raise ValueError(f"ngrams: n = {n_max} needs validation sequences of > {n_max} positions, got {tokens.shape[1]}")
    if test_losses is None:
        _check_batch_size(batch_size)
        test_losses, _ = _validation_pass(model, tokens[:, :n_max + 1], batch_size)
    rows = []
    for n in sorted(ngrams):
        if torch.as_tensor(ngrams[n]).shape[1:] != (n,):
            raise ValueError(f"ngrams[{n}] must have shape [count, {n}], got {tuple(torch.as_tensor(ngrams[n]).shape)}")
        gram = ngram_final_token_loss(model, ngrams[n], bos_id)
        test = float(test_losses[:, n - 1].mean())
        rows.append({"n": n, "loss_gram": gram, "loss_test": test, "score": test / gram})
    return pd.DataFrame(rows).set_index("n")
