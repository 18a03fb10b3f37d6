"""Behavioural probes of the language model (main paper §5, App. B.3.3, B.4.1, Fig. 5): its loss.

* test loss per position with and without the positional embedding zero-ablated (App. B.4.1);
* ICL score, the loss at token k2 minus the loss at token k1 (App. B.3.3);
* the per-token loss change between two checkpoints (Fig. 5).

The bigram and n-gram scores (App. B.3.1-2) are in :mod:`~stagewise.probes.language_ngrams`.

Positions. Contexts are BOS-prefixed (BOS at position 0). "The loss at token k" (k >= 1) is
-log p(t_k | t_<k), i.e. entry ``k - 1`` of :func:`stagewise.probes.language.per_position_loss`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PAPER_LOSS_POSITIONS",
    "PAPER_ICL_TOKENS",
    "position_losses",
    "positional_ablation_losses",
    "loss_positions",
    "icl_tokens",
    "icl_score",
    "per_token_loss_change",
    "token_strings",
    "default_bos_id",
]

# App. B.4.1: "we measure test loss at positions 1, 2, 3, 5, 10, ..., 1000" (context 1024).
PAPER_LOSS_POSITIONS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000)
# App. B.3.3: loss at the 500th token minus the loss at the 50th token, at context 1024.
PAPER_ICL_TOKENS = (50, 500)
PAPER_CONTEXT = 1024


def default_bos_id(model) -> int:
    """BOS id of the truncated GPT-2 tokenizer: the last id, ``d_vocab - 1`` (4,999 for 5k)."""
    return int(model.cfg.d_vocab) - 1


def _check_tokens(model, tokens, name: str = "tokens") -> Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, pos], got {tuple(tokens.shape)}")
    if tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise ValueError(f"{name} need at least 1 sequence of >= 2 positions, got {tuple(tokens.shape)}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{name} have {tokens.shape[1]} positions but the model's n_ctx is {model.cfg.n_ctx}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise ValueError(f"{name} ids must lie in [0, d_vocab={model.cfg.d_vocab}), "
                         f"got [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _zero_positional_embedding(pos_embed, hook):
    return torch.zeros_like(pos_embed)


def _logits(model, tokens: Tensor, ablate_positional: bool) -> Tensor:
    if not ablate_positional:
        return model(tokens, return_type="logits")
    return model.run_with_hooks(tokens, return_type="logits",
                                fwd_hooks=[("hook_pos_embed", _zero_positional_embedding)])


@torch.no_grad()
def _validation_pass(model, tokens: Tensor, batch_size: int, ablate_positional: bool = False,
                     samples: Tensor | None = None, sample_fn=None):
    """Per-token losses [N, T-1] (float64) of ``tokens``, and ``sample_fn(log_probs, current)`` at the
    (sequence, k) pairs ``samples`` [m, 2] (sorted by sequence) from the same forward pass.

    The paper's architecture runs through its plain-torch twin (:func:`~stagewise.models.language_fast.twin_of`:
    the same function, no hooks; measured 2.6x faster per pass on one CPU thread at context 256),
    the positional ablation as the twin with W_pos zeroed; any other model through its own forward."""
    from stagewise.models.language_fast import twin_of

    twin = twin_of(model, zero_positional=ablate_positional)
    losses = torch.empty(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.float64)
    values = []
    for lo in range(0, len(tokens), batch_size):
        chunk = tokens[lo:lo + batch_size]
        logits = twin(chunk) if twin is not None else _logits(model, chunk, ablate_positional)
        logp = F.log_softmax(logits.float(), dim=-1)
        losses[lo:lo + len(chunk)] = -logp[:, :-1].gather(-1, chunk[:, 1:, None]).squeeze(-1).double()
        if samples is not None:
            here = samples[(samples[:, 0] >= lo) & (samples[:, 0] < lo + len(chunk))]
            if len(here):
                seq, k = here[:, 0] - lo, here[:, 1]
                values.append(sample_fn(logp[seq, k], chunk[seq, k]))
    return losses, (torch.cat(values) if samples is not None else None)


# ------------------------------------------------------------------------------------------------
# Loss per position, positional ablation (App. B.4.1) and ICL score (App. B.3.3)


def position_losses(model, tokens, batch_size: int = 16, ablate_positional: bool = False) -> Tensor:
    """Per-token next-token losses [N, T-1] (float64); column k-1 is the loss at token k.

    ``ablate_positional`` zero-ablates the positional embedding (hook ``hook_pos_embed``): for the
    Shortformer model that removes position from the queries' and keys' inputs, its only way in.
    """
    tokens = _check_tokens(model, tokens)
    _check_batch_size(batch_size)
    return _validation_pass(model, tokens, batch_size, ablate_positional)[0]


def loss_positions(n_ctx: int, positions=PAPER_LOSS_POSITIONS) -> tuple[int, ...]:
    """The paper's positions (App. B.4.1) that exist in a context of ``n_ctx`` (k <= n_ctx - 1).

    Positions are absolute (what the positional embedding encodes), so a shorter context keeps the
    paper's early positions and drops the late ones rather than rescaling them.
    """
    if not isinstance(n_ctx, int) or n_ctx < 2:
        raise ValueError(f"n_ctx must be an integer >= 2, got {n_ctx!r}")
    return tuple(k for k in positions if 1 <= k <= n_ctx - 1)


def positional_ablation_losses(model, tokens, batch_size: int = 16, positions=None) -> pd.DataFrame:
    """Mean test loss at each token k with and without the positional embedding zero-ablated (Fig. B.3).

    Index ``k`` (1 .. T-1, or ``positions``); columns ``loss``, ``loss_pos_ablated``, ``difference``.
    """
    tokens = _check_tokens(model, tokens)
    plain = position_losses(model, tokens, batch_size).mean(0)
    ablated = position_losses(model, tokens, batch_size, ablate_positional=True).mean(0)
    ks = np.arange(1, tokens.shape[1]) if positions is None else np.asarray(positions, dtype=int)
    if ks.size == 0 or ks.min() < 1 or ks.max() > tokens.shape[1] - 1:
        raise ValueError(f"positions must lie in [1, {tokens.shape[1] - 1}], got {list(ks)}")
    table = pd.DataFrame({"k": ks, "loss": plain[ks - 1].numpy(), "loss_pos_ablated": ablated[ks - 1].numpy()})
    table["difference"] = table["loss_pos_ablated"] - table["loss"]
    return table.set_index("k")


def icl_tokens(n_ctx: int) -> tuple[int, int]:
    """(k1, k2) of the ICL score at context ``n_ctx``: the paper's (50, 500) at 1024, scaled.

    Rule: k_i = round(k_i^paper · n_ctx / 1024) (halves up), with k1 >= 1 and k2 > k1, so both
    tokens keep their relative place in the context: (13, 125) at 256, (2, 16) at 32.
    """
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise ValueError(f"n_ctx must be an integer >= 4 for an ICL score, got {n_ctx!r}")
    k1, k2 = ((k * n_ctx + PAPER_CONTEXT // 2) // PAPER_CONTEXT for k in PAPER_ICL_TOKENS)
    k1 = max(k1, 1)
    return k1, max(k2, k1 + 1)


def icl_score(model=None, tokens=None, k1: int | None = None, k2: int | None = None, batch_size: int = 16,
              losses: Tensor | None = None, window: int = 0, return_sem: bool = False):
    """ICL score (App. B.3.3): mean over sequences of loss at token k2 minus loss at token k1.

    Negative when the model predicts better later in the context. Defaults: :func:`icl_tokens` of
    the model's n_ctx. Pass ``losses`` ([N, T-1] from :func:`position_losses`) to reuse a pass.

    ``window`` > 0 (our addition; 0 is the paper's definition) averages each sequence's loss over
    tokens k − window .. k + window (clipped to the context) before the difference: the paper
    averages single tokens over 100k sequences, and with a few hundred the single-token score is
    dominated by which tokens happen to sit at k1 and k2 (at the cpu checkpoints: ±0.6 nats with 32
    sequences, ±0.17 with 512; a ±5-token window cuts that about 4×). With ``return_sem`` returns
    (score, standard error over sequences).
    """
    if losses is None:
        if model is None or tokens is None:
            raise ValueError("icl_score needs model and tokens, or losses")
        losses = position_losses(model, tokens, batch_size)
    width = losses.shape[1]
    if k1 is None or k2 is None:
        if model is None:
            raise ValueError("k1 and k2 must be given when no model is passed")
        d1, d2 = icl_tokens(int(model.cfg.n_ctx))
        k1, k2 = (d1 if k1 is None else k1), (d2 if k2 is None else k2)
    for name, k in (("k1", k1), ("k2", k2)):
        if not isinstance(k, int) or not 1 <= k <= width:
            raise ValueError(f"{name} must be an integer token index in [1, {width}], got {k!r}")
    if k1 >= k2:
        raise ValueError(f"k1 ({k1}) must be smaller than k2 ({k2})")
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an integer >= 0 tokens, got {window!r}")

    def around(k):
        return losses[:, max(k - window, 1) - 1:min(k + window, width)].double().mean(1)

    per_sequence = around(k2) - around(k1)
    score = float(per_sequence.mean())
    if not return_sem:
        return score
    sem = float(per_sequence.std() / len(per_sequence) ** 0.5) if len(per_sequence) > 1 else float("nan")
    return score, sem


# ------------------------------------------------------------------------------------------------
# Per-token loss change between two checkpoints (Fig. 5)


def token_strings(token_ids, tokenizer=None) -> list[str]:
    """Each token id decoded on its own (byte-level; fragments of a UTF-8 character show as U+FFFD)."""
    if tokenizer is None:
        from stagewise.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    return [tokenizer.decode([int(t)], skip_special_tokens=False) for t in torch.as_tensor(token_ids).reshape(-1)]


@torch.no_grad()
def per_token_loss_change(model_before, model_after, tokens, tokenizer=None, decode: bool = True) -> pd.DataFrame:
    """Loss of each token of one text under two checkpoints, and the change (Fig. 5).

    ``tokens``: one BOS-prefixed sequence [T] (or [1, T]). One row per position k = 0 .. T-1:
    ``token_id``, ``token`` (text, if ``decode``), ``loss_before``, ``loss_after`` and
    ``change = loss_after - loss_before`` (negative: the later checkpoint predicts token k better;
    NaN at k = 0, which is never predicted).
    """
    tokens = torch.as_tensor(tokens).long()
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence [T] or [1, T], got {tuple(tokens.shape)}")
    for name, m in (("model_before", model_before), ("model_after", model_after)):
        _check_tokens(m, tokens, f"tokens (for {name})")
    before = position_losses(model_before, tokens)[0].numpy()
    after = position_losses(model_after, tokens)[0].numpy()
    nan = np.array([np.nan])
    table = pd.DataFrame({"k": np.arange(tokens.shape[1]), "token_id": tokens[0].numpy(),
                          "loss_before": np.concatenate([nan, before]), "loss_after": np.concatenate([nan, after])})
    if decode:
        table.insert(2, "token", token_strings(tokens[0], tokenizer))
    table["change"] = table["loss_after"] - table["loss_before"]
    return table.set_index("k")
