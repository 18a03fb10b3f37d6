"""Attention-only language models of the main paper (App. D.1.1), built on TransformerLens.

One- and two-layer attention-only transformers with ``d_model = 256``, ``H = 8`` heads
(``d_head = 32``), LayerNorm before every attention layer and before the unembedding, and a
learnable Shortformer positional embedding (Press et al., 2021: the positional embedding is
added to the queries' and keys' inputs only, never to the residual stream). At the paper's
context length of 1024 and vocabulary of 5,000 tokens they have exactly

* ``d = 3,091,336`` parameters for ``L = 1`` and
* ``d = 3,355,016`` parameters for ``L = 2``  (App. D.1.1),

which ``tests/test_language_model.py`` checks.

TransformerLens 3.9 computes attention with an explicit ``q @ k`` / softmax / ``pattern @ v``
(it never calls ``F.scaled_dot_product_attention``), so ``torch.func.vmap`` over
:func:`lm_loss_functional` stays batched on CPU instead of falling back to a per-example loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LanguageModelConfig", "make_language_model", "lm_loss", "lm_forward_loss", "lm_forward_loss_subsampled",
           "lm_loss_functional", "per_token_loss", "subsampled_positions"]

PAPER_PARAMETER_COUNTS = {1: 3_091_336, 2: 3_355_016}


@dataclass(frozen=True)
class LanguageModelConfig:
    """Architecture of the paper's language models (App. D.1.1); defaults are the paper's L = 2."""

    n_layers: int = 2
    n_ctx: int = 1024
    d_model: int = 256
    n_heads: int = 8
    d_vocab: int = 5000

    def __post_init__(self):
        for name in ("n_layers", "n_ctx", "d_model", "n_heads", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


def make_language_model(config: LanguageModelConfig, device: str | torch.device = "cpu"):
    """A freshly initialised attention-only ``HookedTransformer`` (TransformerLens' GPT-2 init).

    Initialisation draws from torch's global RNG, so seed it first (the training loop does).
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        d_head=config.d_head,
        n_ctx=config.n_ctx,
        d_vocab=config.d_vocab,
        attn_only=True,
        normalization_type="LN",
        positional_embedding_type="shortformer",
        act_fn=None,
        default_prepend_bos=True,
        device=str(device),
    )
    with warnings.catch_warnings():
        # 3.9 warns that HookedTransformer is deprecated in favour of TransformerBridge (4.x),
        # which drops the Shortformer embedding the paper uses; we pin 3.9 on purpose.
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
        return HookedTransformer(cfg)


def _check_tokens(model, tokens: Tensor) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens need at least 2 positions for next-token prediction, got {tokens.shape[1]}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"tokens have {tokens.shape[1]} positions but the model's n_ctx is {model.cfg.n_ctx}")


def per_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Next-token cross-entropy ``-log p(t_{k+1} | S_{<=k})`` per position, shape [batch, pos-1]."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(tokens.shape[0], -1)


def lm_loss(model, batch) -> Tensor:
    """Empirical loss ``ℓ_n(w)``: next-token cross-entropy averaged over all predicted positions.

    ``batch`` is ``(tokens,)`` or a tensor of token ids ``[batch, pos]`` (the first token, BOS,
    is never a target). This is the training loss ``loss_fn(model, batch)`` of
    :func:`stagewise.train.train`.
    """
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    _check_tokens(model, tokens)
    if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
        raise ValueError(f"token ids must lie in [0, d_vocab={model.cfg.d_vocab}); got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}] (tokenizer and model vocabularies differ?)")
    return per_token_loss(model(tokens, return_type="logits"), tokens).mean()


def lm_forward_loss(forward, batch) -> Tensor:
    """:func:`lm_loss` for the LLC engine's ``loss(forward, batch)`` convention (``forward`` is the
    model's forward pass at the sampled weights; see :func:`stagewise.llc.module_loss_fn`)."""
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    return per_token_loss(forward(tokens, return_type="logits"), tokens).mean()


# HookedTransformer runs ``blocks[start_at_layer:stop_at_layer]``: an index past the last block
# means "every block" as a stop and "no block" (just ln_final + unembed) as a start.
_PAST_LAST_BLOCK = 1 << 30


def subsampled_positions(batch_size: int, n_ctx: int, stride: int) -> Tensor:
    """Predicted positions ``[batch, (n_ctx - 1) // stride]`` for :func:`lm_forward_loss_subsampled`:
    row ``i`` keeps positions ``k ≡ i (mod stride)``, so consecutive rows tile every residue and a
    batch of ``stride`` rows covers each position once."""
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    per_row = (n_ctx - 1) // stride
    if per_row < 1:
        raise ValueError(f"stride ({stride}) must be at most n_ctx - 1 = {n_ctx - 1} (positions predicted per context)")
    offsets = torch.arange(batch_size) % stride
    return offsets[:, None] + stride * torch.arange(per_row)[None, :]


def lm_forward_loss_subsampled(forward, batch, stride: int = 4) -> Tensor:
    """:func:`lm_forward_loss` with the unembedding evaluated at every ``stride``-th position only.

    The attention layers run over the whole context, but LayerNorm-final, the 256 x 5000
    unembedding and the softmax (≈ 60% of the model's FLOPs at context 256) only at the positions
    of :func:`subsampled_positions`. Row ``i`` of the batch predicts positions ``k ≡ i (mod stride)``,
    so over the rows every position counts equally: the minibatch loss is an unbiased estimate of
    the all-position loss ℓ_n(w) (eq. 1), with more variance. Its use in SGLD is our choice, for
    CPU speed (the papers compute every position); the paired ℓ(w*) of the LLC engine is evaluated
    on the same rows and positions, so the estimator λ̂ = nβ(E ℓ(w) − ℓ(w*)) is unchanged in
    expectation. ``stride=1`` is exactly :func:`lm_forward_loss`.
    """
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    if stride == 1:
        return lm_forward_loss(forward, tokens)
    pos = subsampled_positions(tokens.shape[0], tokens.shape[1], stride).to(tokens.device)
    resid = forward(tokens, stop_at_layer=_PAST_LAST_BLOCK)  # all blocks, then the residual stream
    picked = torch.gather(resid, 1, pos[:, :, None].expand(-1, -1, resid.shape[-1]))
    logits = forward(picked, start_at_layer=_PAST_LAST_BLOCK, return_type="logits")  # ln_final + unembed only
    targets = torch.gather(tokens, 1, pos + 1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lm_loss_functional(model, params: dict[str, Tensor], batch) -> Tensor:
    """:func:`lm_loss` at parameters ``params`` via ``torch.func.functional_call`` (for SGLD / vmap)."""
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    _check_tokens(model, tokens)
    logits = torch.func.functional_call(model, params, (tokens,), {"return_type": "logits"})
    return per_token_loss(logits, tokens).mean()
