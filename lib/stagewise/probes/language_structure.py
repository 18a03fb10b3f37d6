"""Structural probes of the language model (main paper §5, App. B.4; refined-LLC paper App. B).

* positional-embedding PCA: explained variance per component, PC scores and norms per position (B.4.1);
* Q/K/V composition scores between heads of two layers, eq. (13) (B.4.2);
* previous-token and current-token scores (B.4.3) and prefix-matching scores (B.4.4) per head,
  from the attention patterns (hook ``blocks.{l}.attn.hook_pattern``) on synthetic sequences;
* head classification (previous-token / current-token / induction / multigram) from those scores.

TransformerLens conventions (3.9), used throughout: ``W_Q, W_K, W_V`` are [n_heads, d_model, d_head],
``W_O`` is [n_heads, d_head, d_model], and activations are row vectors multiplied on the right, so
a head's OV circuit is ``W_OV = W_V @ W_O`` and its QK circuit ``W_QK = W_Q @ W_K.T`` (query on the
left). The paper writes the transposes (column vectors, ``W_OV = W_O W_V``, ``W_QK = W_Q^T W_K``);
Frobenius norms are transpose-invariant, so eq. (13) reads, in TransformerLens matrices,
``‖W_OV^{h1} R‖_F / (‖W_OV^{h1}‖_F ‖R‖_F)`` with ``R = W_QK^{h2}`` (Q), ``W_QK^{h2}.T`` (K) and
``W_OV^{h2}`` (V) — exactly ``HookedTransformer.all_composition_scores`` (tests check both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stagewise.models.language_fast import twin_of
from stagewise.probes.language_behaviour import default_bos_id

__all__ = [
    "PREVIOUS_TOKEN_THRESHOLD",
    "CURRENT_TOKEN_THRESHOLD",
    "INDUCTION_THRESHOLD",
    "HEAD_TYPES",
    "PositionalPCA",
    "positional_embedding_pca",
    "composition_scores",
    "all_composition_scores",
    "previous_token_sequences",
    "prefix_matching_sequences",
    "repeated_sequences",
    "offset_repeat_sequences",
    "offset_repeat_losses",
    "OFFSET_DROP_THRESHOLD",
    "induction_circuit_formation",
    "previous_and_current_token_scores",
    "prefix_matching_scores",
    "induction_scores",
    "attention_head_scores",
    "head_score_table",
    "classify_heads",
]

# Head classification thresholds (fraction of the head's attention; refined-LLC paper App. B:
# heads that "strongly and systematically attend to the previous token (resp. current token)").
# 0.4 > 1/3: a head that spreads its attention evenly over three or more recent tokens (the
# n-gram / multigram heads of LM2) never qualifies, a head that concentrates on one relative
# position does; it is ~12x the uniform-attention level of the paper's probe (mean 1/L = 0.034 for
# L uniform in 16..64).
PREVIOUS_TOKEN_THRESHOLD = 0.4
CURRENT_TOKEN_THRESHOLD = 0.4
# Prefix matching: 0.3 is ~28x the uniform-attention level of the paper's probe (mean 1/(q+1) =
# 0.0106 for the second [A] in positions 64..127). [B] sits at a random position far back, so no
# positional rule can reach it; 30% of the attention on it means content matching.
INDUCTION_THRESHOLD = 0.3
HEAD_TYPES = ("previous-token", "current-token", "induction", "multigram")
# The loss drop (nats per token) on a repeat at a random offset (:func:`offset_repeat_losses`) that
# calls copying content-based: a head that copies from a fixed distance back earns a negative drop.
OFFSET_DROP_THRESHOLD = 1.0


def _heads_label(layer: int, head: int) -> str:
    return f"{layer}:{head}"


# ------------------------------------------------------------------------------------------------
# Positional embedding (App. B.4.1, Fig. B.4)


@dataclass(frozen=True)
class PositionalPCA:
    """PCA of the positional embedding's rows W_pos[k] (one point per position k).

    ``explained_variance_ratio`` [min(n_ctx, d_model)], ``scores`` [n_ctx, num_components] (PC
    coordinates; each component's sign fixed so its largest-magnitude score is positive, which keeps
    curves comparable across checkpoints), ``norms`` [n_ctx] = ‖W_pos[k]‖ (uncentred).
    """

    explained_variance_ratio: np.ndarray
    scores: np.ndarray
    norms: np.ndarray


@torch.no_grad()
def positional_embedding_pca(model, num_components: int = 3) -> PositionalPCA:
    """PCA of ``model.W_pos`` [n_ctx, d_model] (App. B.4.1: PC1 explains 94.2% at step 6400)."""
    w = model.W_pos.detach().double().cpu()
    k_max = min(w.shape)
    if not isinstance(num_components, int) or not 1 <= num_components <= k_max:
        raise ValueError(f"num_components must be an integer in [1, {k_max}], got {num_components!r}")
    centred = w - w.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    total = var.sum()
    evr = (var / total).numpy() if total > 0 else np.full(len(var), np.nan)
    scores = (u[:, :num_components] * s[:num_components]).numpy()
    flip = np.sign(scores[np.abs(scores).argmax(0), np.arange(num_components)])
    scores = scores * np.where(flip == 0, 1.0, flip)
    return PositionalPCA(evr, scores, w.norm(dim=1).numpy())


# ------------------------------------------------------------------------------------------------
# Composition scores, eq. (13) (App. B.4.2, Fig. B.5)


def _reader_factors(model, layer: int, kind: str, fold: bool):
    """(R_in [H, d, dh], R_out [H, dh, d]) with the reader's circuit R = R_in @ R_out."""
    attn = model.blocks[layer].attn
    q, k, v, o = (attn.W_Q.double(), attn.W_K.double(), attn.W_V.double(), attn.W_O.double())
    if fold:
        q, k, v = (_fold_layer_norm(model, layer, w) for w in (q, k, v))
    if kind == "Q":
        return q, k.transpose(1, 2)  # W_QK = W_Q W_K^T: the query side reads the writer's output
    if kind == "K":
        return k, q.transpose(1, 2)  # W_QK^T = W_K W_Q^T: the key side reads it
    return v, o  # W_OV = W_V W_O


def _fold_layer_norm(model, layer: int, w: Tensor) -> Tensor:
    """C diag(γ) W: the reading LayerNorm's centring C = I - 11^T/d and weight γ folded into W."""
    gamma = model.blocks[layer].ln1.w.detach().double()
    folded = gamma[None, :, None] * w
    return folded - folded.mean(dim=1, keepdim=True)


def _thin_r(x: Tensor) -> Tensor:
    """R of the thin QR of each x [H, d, dh] (‖x Y‖_F = ‖R Y‖_F for any Y)."""
    return torch.linalg.qr(x, mode="r")[1]


@torch.no_grad()
def composition_scores(model, kind: str, writer_layer: int = 0, reader_layer: int = 1,
                       layer_norm: str = "none") -> Tensor:
    """Composition scores of ``kind`` ('Q', 'K' or 'V') between every writer head h1 of
    ``writer_layer`` and reader head h2 of ``reader_layer``, eq. (13): a [H, H] table [h1, h2].

    ``layer_norm='none'`` (default) uses the raw weights, as TransformerLens'
    ``all_composition_scores`` (the paper's tool; LayerNorm cannot be folded into a Shortformer
    model's weights by TransformerLens). ``'fold'`` folds each reading LayerNorm's centring and
    weight into the matrices that read it (W_V of the writer, the reader's W_Q / W_K / W_V); the
    per-token 1/σ scale cancels in the normalised score, and the Shortformer positional embedding,
    added after the LayerNorm, is not part of either circuit.

    Computed through thin QR factors, ‖W_V X R_out‖_F = ‖R_V X R_outᵀ-factor‖_F, in float64: no
    d_model x d_model product is formed.
    """
    if kind not in ("Q", "K", "V"):
        raise ValueError(f"kind must be 'Q', 'K' or 'V', got {kind!r}")
    if layer_norm not in ("none", "fold"):
        raise ValueError(f"layer_norm must be 'none' or 'fold', got {layer_norm!r}")
    n_layers = model.cfg.n_layers
    if not (isinstance(writer_layer, int) and isinstance(reader_layer, int)
            and 0 <= writer_layer < reader_layer < n_layers):
        raise ValueError(f"writer_layer and reader_layer must satisfy 0 <= writer_layer < reader_layer < "
                         f"n_layers={n_layers}, got {writer_layer!r}, {reader_layer!r}")
    fold = layer_norm == "fold"
    attn = model.blocks[writer_layer].attn
    w_v, w_o = attn.W_V.double(), attn.W_O.double()
    if fold:
        w_v = _fold_layer_norm(model, writer_layer, w_v)
    r_in, r_out = _reader_factors(model, reader_layer, kind, fold)
    t_v = _thin_r(w_v)  # [H, dh, dh]
    t_out = _thin_r(r_out.transpose(1, 2))  # R_out = T_out^T Q^T
    mid = torch.einsum("aij,bjk->abik", w_o, r_in)  # W_O^{h1} R_in^{h2}: [H1, H2, dh, dh]
    product = torch.einsum("aij,abjk,blk->abil", t_v, mid, t_out)
    writer_norm = (t_v @ w_o).flatten(1).norm(dim=1)
    reader_norm = (r_in @ t_out.transpose(1, 2)).flatten(1).norm(dim=1)
    scores = product.flatten(2).norm(dim=2) / (writer_norm[:, None] * reader_norm[None, :])
    return scores.float()


def all_composition_scores(model, writer_layer: int = 0, reader_layer: int = 1,
                           layer_norm: str = "none") -> dict[str, Tensor]:
    """``{'Q': [H, H], 'K': [H, H], 'V': [H, H]}`` of :func:`composition_scores`."""
    return {kind: composition_scores(model, kind, writer_layer, reader_layer, layer_norm) for kind in "QKV"}


# ------------------------------------------------------------------------------------------------
# Synthetic sequences (App. B.4.3, B.4.4)


def _check_vocab(d_vocab: int, bos_id: int, need: int) -> None:
    if not isinstance(d_vocab, int) or d_vocab < need:
        raise ValueError(f"d_vocab must be an integer >= {need}, got {d_vocab!r}")
    if not isinstance(bos_id, int) or not 0 <= bos_id < d_vocab:
        raise ValueError(f"bos_id must be an integer in [0, {d_vocab - 1}], got {bos_id!r}")


def _uniform_excluding(generator, shape, d_vocab: int, excluded: Tensor) -> Tensor:
    """Uniform over [0, d_vocab) minus each row's ``excluded`` ids (distinct; [N, e]) -> [N, *shape]."""
    excluded = excluded.sort(dim=1).values
    r = torch.randint(0, d_vocab - excluded.shape[1], (excluded.shape[0], *shape), generator=generator)
    view = (excluded.shape[0],) + (1,) * len(shape)
    for j in range(excluded.shape[1]):  # map onto the allowed ids, skipping excluded ones in order
        r += (r >= excluded[:, j].view(view)).long()
    return r


def previous_token_sequences(num_sequences: int, d_vocab: int, bos_id: int, lengths=(16, 64),
                             seed: int = 0) -> tuple[Tensor, Tensor]:
    """App. B.4.3's sequences: BOS, then uniform tokens other than BOS; length L uniform in
    ``lengths`` (inclusive). Returns tokens [N, max L] (the tail beyond each L is never read: the
    model is causal) and L [N]."""
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    lo, hi = lengths
    if not (isinstance(lo, int) and isinstance(hi, int) and 2 <= lo <= hi):
        raise ValueError(f"lengths must be integers (lo, hi) with 2 <= lo <= hi, got {lengths!r}")
    _check_vocab(d_vocab, bos_id, 2)
    g = torch.Generator().manual_seed(seed)
    ls = torch.randint(lo, hi + 1, (num_sequences,), generator=g)
    body = _uniform_excluding(g, (hi - 1,), d_vocab, torch.full((num_sequences, 1), bos_id))
    return torch.cat([torch.full((num_sequences, 1), bos_id), body], dim=1), ls


def prefix_matching_sequences(num_sequences: int, d_vocab: int, bos_id: int, length: int = 128,
                              seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """App. B.4.4's sequences [A][B] ... [A]: BOS at 0, the first [A] at a1 in the first half with
    [B] right after it (still in the first half), the second [A] at a2 in the second half; every
    other token uniform over the vocabulary minus {A, B, BOS}. Returns tokens [N, length], a1, a2."""
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    if not isinstance(length, int) or length < 6:
        raise ValueError(f"length must be an integer >= 6, got {length!r}")
    _check_vocab(d_vocab, bos_id, 4)
    g = torch.Generator().manual_seed(seed)
    n, half = num_sequences, length // 2
    bos = torch.full((n, 1), bos_id)
    a = _uniform_excluding(g, (1,), d_vocab, bos)
    b = _uniform_excluding(g, (1,), d_vocab, torch.cat([bos, a], 1))
    tokens = _uniform_excluding(g, (length,), d_vocab, torch.cat([bos, a, b], 1))
    a1 = torch.randint(1, half - 1, (n,), generator=g)  # a1 + 1 <= half - 1
    a2 = torch.randint(half, length, (n,), generator=g)
    rows = torch.arange(n)
    tokens[:, 0] = bos_id
    tokens[rows, a1] = a[:, 0]
    tokens[rows, a1 + 1] = b[:, 0]
    tokens[rows, a2] = a[:, 0]
    return tokens, a1, a2


def repeated_sequences(num_sequences: int, d_vocab: int, bos_id: int, length: int = 128, seed: int = 0) -> Tensor:
    """``BOS, R, R``: R of (length - 1) // 2 uniform non-BOS tokens, repeated once: [N, 1 + 2 len(R)]."""
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    if not isinstance(length, int) or length < 5:
        raise ValueError(f"length must be an integer >= 5, got {length!r}")
    _check_vocab(d_vocab, bos_id, 2)
    g = torch.Generator().manual_seed(seed)
    body = _uniform_excluding(g, ((length - 1) // 2,), d_vocab, torch.full((num_sequences, 1), bos_id))
    return torch.cat([torch.full((num_sequences, 1), bos_id), body, body], dim=1)


def offset_repeat_sequences(num_sequences: int, d_vocab: int, bos_id: int, length: int = 128, segment: int = 20,
                            seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Uniform non-BOS tokens after BOS, with one segment of ``segment`` tokens written at a random
    place ``a`` of the first half and again at a random place ``b`` of the second half: the
    distance ``b - a`` varies from sequence to sequence, so a head that copies from a fixed
    relative position (the ``BOS + R + R`` trap) gains nothing, and only content-based induction
    predicts the second copy. Returns tokens [N, length], a, b."""
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    if not isinstance(segment, int) or segment < 2:
        raise ValueError(f"segment must be an integer >= 2, got {segment!r}")
    if not isinstance(length, int) or length < 2 * segment + 3:
        raise ValueError(f"length must be an integer >= 2 * segment + 3 = {2 * segment + 3}, got {length!r}")
    _check_vocab(d_vocab, bos_id, 2)
    g = torch.Generator().manual_seed(seed)
    half = length // 2
    tokens = _uniform_excluding(g, (length,), d_vocab, torch.full((num_sequences, 1), bos_id))
    tokens[:, 0] = bos_id
    a = torch.randint(1, half - segment + 1, (num_sequences,), generator=g)
    b = torch.randint(half, length - segment + 1, (num_sequences,), generator=g)
    span = torch.arange(segment)
    rows = torch.arange(num_sequences)[:, None]
    tokens[rows, b[:, None] + span] = tokens[rows, a[:, None] + span]
    return tokens, a, b


@torch.no_grad()
def offset_repeat_losses(model, num_sequences: int = 256, length: int = 128, segment: int = 20, seed: int = 0,
                         bos_id: int | None = None, batch_size: int = 64) -> dict[str, float]:
    """Mean next-token loss on the first and on the second copy of :func:`offset_repeat_sequences`'
    segment (its tokens 2..``segment``: the first token of a copy is unpredictable) and ``drop`` =
    first - second: ~0 without induction, several nats with a content-based induction head, and
    negative for a head that copies from a fixed offset (it predicts the wrong token)."""
    from stagewise.probes.language_behaviour import position_losses

    bos = default_bos_id(model) if bos_id is None else bos_id
    _check_model_positions(model, length, "length")
    tokens, a, b = offset_repeat_sequences(num_sequences, model.cfg.d_vocab, bos, length, segment, seed)
    losses = position_losses(model, tokens, batch_size=batch_size)  # column k - 1: loss at token k
    rows = torch.arange(num_sequences)[:, None]
    span = torch.arange(1, segment)  # tokens a+1 .. a+segment-1 are predicted at columns a .. a+segment-2
    first = float(losses[rows, a[:, None] + span - 1].mean())
    second = float(losses[rows, b[:, None] + span - 1].mean())
    return {"first": first, "second": second, "drop": first - second}


# ------------------------------------------------------------------------------------------------
# Attention scores per head


@torch.no_grad()
def _attention_at(model, tokens: Tensor, query: Tensor, keys: dict[str, Tensor], twin=None) -> dict[str, Tensor]:
    """Attention weight of every head from position ``query[i, j]`` to ``keys[name][i, j]`` of
    sequence i (index tensors [N] or [N, m]): name -> the sum over (i, j), [n_layers, n_heads].
    ``twin``: ``model``'s :func:`~stagewise.models.language_fast.twin_of` (made once per probe by the
    callers), whose pattern rows at the queries replace the model's hooks; None: the hooks."""
    if twin is not None:  # the paper's architecture: pattern rows at the queries only, no hooks
        q2 = query.reshape(len(tokens), -1).long()
        patterns = twin.attention_rows(tokens.long(), q2)
        return {name: torch.stack([p.gather(3, key.reshape(len(tokens), 1, -1, 1).long().expand(-1, p.shape[1], -1, 1))
                                   .double().sum((0, 2, 3)) for p in patterns])
                for name, key in keys.items()}
    n_layers = model.cfg.n_layers
    out = {name: [None] * n_layers for name in keys}
    rows = torch.arange(len(tokens)).view(-1, *([1] * (query.dim() - 1)))

    def grab(pattern, hook):
        layer = int(hook.name.split(".")[1])
        for name, key in keys.items():
            out[name][layer] = pattern[rows, :, query, key].double().reshape(-1, pattern.shape[1]).sum(0)

    model.run_with_hooks(tokens, stop_at_layer=n_layers,
                         fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), grab)])
    return {name: torch.stack(v) for name, v in out.items()}


def _check_model_positions(model, needed: int, name: str) -> None:
    if needed > model.cfg.n_ctx:
        raise ValueError(f"{name} needs {needed} positions but the model's n_ctx is {model.cfg.n_ctx}")


def previous_and_current_token_scores(model, num_sequences: int = 10_000, lengths=(16, 64), seed: int = 0,
                                      bos_id: int | None = None, batch_size: int = 256) -> tuple[Tensor, Tensor, float]:
    """Previous-token score (App. B.4.3) and current-token score of every head: [n_layers, n_heads] each.

    On :func:`previous_token_sequences`, the attention each head pays, at the last token of each
    sequence, to the previous token (previous-token score) and to that last token itself
    (current-token score, the refined-LLC paper's criterion), averaged over sequences. Sequences
    are sorted by length and batched, each batch cut to its longest sequence. Also returns the
    uniform-attention level mean(1/L) of these queries (what a head attending evenly scores).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    bos = default_bos_id(model) if bos_id is None else bos_id
    _check_model_positions(model, lengths[1], "lengths")
    tokens, ls = previous_token_sequences(num_sequences, model.cfg.d_vocab, bos, lengths, seed)
    order = ls.argsort()
    twin = twin_of(model)
    total = {"prev": 0.0, "cur": 0.0}
    for lo in range(0, num_sequences, batch_size):
        idx = order[lo:lo + batch_size]
        q = ls[idx] - 1
        got = _attention_at(model, tokens[idx, :int(ls[idx].max())], q, {"prev": q - 1, "cur": q}, twin)
        for name in total:
            total[name] = total[name] + got[name]
    chance = float((1.0 / ls.double()).mean())
    return (total["prev"] / num_sequences).float(), (total["cur"] / num_sequences).float(), chance


def prefix_matching_scores(model, num_sequences: int = 10_000, length: int = 128, seed: int = 0,
                           bos_id: int | None = None, batch_size: int = 128) -> tuple[Tensor, Tensor, float]:
    """Prefix-matching score (App. B.4.4, Olsson et al.) of every head: [n_layers, n_heads].

    On :func:`prefix_matching_sequences`, the attention from the second [A] to [B], the token after
    the first [A] — what an induction head attends to (main text §5.4: "measures attention to [B]
    from the latter [A]"; App. B.4.4's wording "to the first instance of [A]" describes a
    duplicate-token head instead). The attention to the first [A] is returned as well
    (duplicate-token score), then the uniform-attention level mean(1/(a2+1)).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    bos = default_bos_id(model) if bos_id is None else bos_id
    _check_model_positions(model, length, "length")
    tokens, a1, a2 = prefix_matching_sequences(num_sequences, model.cfg.d_vocab, bos, length, seed)
    twin = twin_of(model)
    total = {"prefix": 0.0, "duplicate": 0.0}
    for lo in range(0, num_sequences, batch_size):
        sl = slice(lo, lo + batch_size)
        got = _attention_at(model, tokens[sl], a2[sl], {"prefix": a1[sl] + 1, "duplicate": a1[sl]}, twin)
        for name in total:
            total[name] = total[name] + got[name]
    chance = float((1.0 / (a2 + 1).double()).mean())
    return (total["prefix"] / num_sequences).float(), (total["duplicate"] / num_sequences).float(), chance


def induction_scores(model, num_sequences: int = 1000, length: int = 128, seed: int = 0, bos_id: int | None = None,
                     batch_size: int = 64) -> tuple[Tensor, float]:
    """Induction score on repeated random tokens (Elhage et al., Olsson et al.): [n_layers, n_heads].

    Sequences ``BOS, R, R`` with R of h = (length - 1) // 2 uniform non-BOS tokens; the score is the
    attention from each position q of the second copy to q - h + 1, the token after the first
    occurrence of the current token, averaged over positions and sequences. A variant of the
    paper's prefix-matching score (App. B.4.4, :func:`prefix_matching_scores`: a single [A]...[A]
    pair among unrelated tokens), often called the induction score in TransformerLens-based work.
    Also returns the uniform-attention level mean(1/(q+1)).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    bos = default_bos_id(model) if bos_id is None else bos_id
    _check_model_positions(model, length, "length")
    tokens = repeated_sequences(num_sequences, model.cfg.d_vocab, bos, length, seed)
    half = (length - 1) // 2
    queries = torch.arange(half + 1, 2 * half + 1)  # the second copy
    twin = twin_of(model)
    total = 0.0
    for lo in range(0, num_sequences, batch_size):
        chunk = tokens[lo:lo + batch_size]
        q = queries.expand(len(chunk), -1)
        total = total + _attention_at(model, chunk, q, {"induction": q - half + 1}, twin)["induction"]
    chance = float((1.0 / (queries + 1).double()).mean())
    return (total / (num_sequences * len(queries))).float(), chance


def attention_head_scores(model, num_previous_token_sequences: int = 10_000, lengths=(16, 64),
                          num_prefix_sequences: int = 10_000, prefix_length: int = 128, seed: int = 0,
                          bos_id: int | None = None) -> pd.DataFrame:
    """One row per head (index ``layer:head``): ``layer``, ``head``, ``previous_token``,
    ``current_token``, ``prefix_matching``, ``duplicate_token``. ``attrs['chance']`` holds the
    uniform-attention level of each score (the level of a head that attends evenly)."""
    prev, cur, chance_prev = previous_and_current_token_scores(model, num_previous_token_sequences, lengths, seed,
                                                               bos_id)
    prefix, dup, chance_prefix = prefix_matching_scores(model, num_prefix_sequences, prefix_length, seed + 1, bos_id)
    return head_score_table(prev, cur, prefix, dup, chance_prev, chance_prefix)


def head_score_table(prev: Tensor, cur: Tensor, prefix: Tensor, dup: Tensor, chance_prev: float,
                     chance_prefix: float) -> pd.DataFrame:
    """The table of :func:`attention_head_scores` from [n_layers, n_heads] score tensors."""
    n_layers, n_heads = prev.shape
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    table = pd.DataFrame({
        "layer": layer, "head": head,
        "previous_token": prev.reshape(-1).numpy(), "current_token": cur.reshape(-1).numpy(),
        "prefix_matching": prefix.reshape(-1).numpy(), "duplicate_token": dup.reshape(-1).numpy(),
    }, index=[_heads_label(int(l), int(h)) for l, h in zip(layer, head)])
    table.attrs["chance"] = {"previous_token": chance_prev, "current_token": chance_prev,
                             "prefix_matching": chance_prefix, "duplicate_token": chance_prefix}
    return table


def classify_heads(scores: pd.DataFrame, previous_token_threshold: float = PREVIOUS_TOKEN_THRESHOLD,
                   current_token_threshold: float = CURRENT_TOKEN_THRESHOLD,
                   induction_threshold: float = INDUCTION_THRESHOLD) -> pd.Series:
    """Head types of the refined-LLC paper (App. B): 'previous-token', 'current-token', 'induction'
    or 'multigram' (none of the others), from a table of :func:`attention_head_scores`.

    A head is of a type when its score reaches the type's threshold (previous_token,
    current_token, prefix_matching respectively); a head passing several gets the type whose score
    is largest. Thresholds must lie in (0, 1] and above the table's uniform-attention levels
    (``attrs['chance']``, if present): a threshold at chance would call an evenly attending head a type.
    """
    columns = {"previous-token": ("previous_token", previous_token_threshold),
               "current-token": ("current_token", current_token_threshold),
               "induction": ("prefix_matching", induction_threshold)}
    chance = scores.attrs.get("chance", {})
    names = {"previous_token": "previous_token_threshold", "current_token": "current_token_threshold",
             "prefix_matching": "induction_threshold"}
    for column, threshold in columns.values():
        if column not in scores.columns:
            raise ValueError(f"scores must have a {column!r} column (see attention_head_scores)")
        if not 0 < threshold <= 1:
            raise ValueError(f"{names[column]} must lie in (0, 1], got {threshold!r}")
        if column in chance and threshold <= chance[column]:
            raise ValueError(f"{names[column]} ({threshold}) must exceed the uniform-attention level "
                             f"{chance[column]:.3f} of these scores")
    values = np.stack([scores[c].to_numpy(dtype=float) for c, _ in columns.values()], axis=1)
    passed = values >= np.array([t for _, t in columns.values()])
    best = np.where(passed, values, -np.inf).argmax(axis=1)
    types = np.array(list(columns))[best]
    return pd.Series(np.where(passed.any(axis=1), types, "multigram"), index=scores.index, name="type")


def induction_circuit_formation(steps, previous_token_l0, prefix_matching_l1, offset_drop,
                                consecutive: int = 2) -> dict:
    """When a content-based induction circuit forms, from probes at increasing ``steps``: the
    largest layer-0 previous-token score, the largest layer-1 prefix-matching score and the
    random-offset repeat drop (NaN: not measured, never passes). Returns ``{"first_step_above":
    {test: first step at or above its threshold, or None}, "formed_step": the first step from which
    all three pass at ``consecutive`` consecutive probes, or None}`` — the rule of notebook 01 and
    of the induction pilots (a single noisy probe above threshold does not count)."""
    if not isinstance(consecutive, int) or consecutive < 1:
        raise ValueError(f"consecutive must be an integer >= 1, got {consecutive!r}")
    steps = np.asarray(steps, dtype=float)
    tests = {"previous_token_l0": (previous_token_l0, PREVIOUS_TOKEN_THRESHOLD),
             "prefix_matching_l1": (prefix_matching_l1, INDUCTION_THRESHOLD),
             "random_offset_drop": (offset_drop, OFFSET_DROP_THRESHOLD)}
    passing = {}
    for name, (values, threshold) in tests.items():
        values = np.asarray(values, dtype=float)
        if values.shape != steps.shape:
            raise ValueError(f"{name} must hold one value per step ({steps.shape[0]}), got shape {values.shape}")
        passing[name] = values >= threshold  # NaN compares False
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    first = {name: (float(steps[ok.argmax()]) if ok.any() else None) for name, ok in passing.items()}
    every = np.all(list(passing.values()), axis=0)
    formed = next((float(steps[i]) for i in range(len(steps) - consecutive + 1) if every[i:i + consecutive].all()), None)
    return {"first_step_above": first, "formed_step": formed}
