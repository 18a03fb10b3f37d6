"""The in-context linear-regression transformer (main paper App. D.2), nanoGPT-style, one file.

Pre-LayerNorm, decoder-only, learnable positional embedding, L = 2 blocks of H = 4 heads,
d_embed = d_mlp = 64, tokens in R^{D+1}. At D = 4, K = 8 it has exactly 51,717 parameters,
which pins the layer layout of the paper's code (bias-free token embedding, positional embedding,
Q/K/V and attention output projections; MLP and unembedding with biases; ReLU MLP; a final
LayerNorm before the unembedding).

Attention is written with plain matmuls + softmax (no ``scaled_dot_product_attention``) so that
``torch.func.vmap`` over SGLD chains batches it instead of looping per example on CPU.

``forward(tokens, predictions_only=True)`` returns only the predictions ŷ_k = out[:, 2k, 0] that the
loss reads (§6), skipping work they do not need (≈ 0.8× the matmul FLOPs, same mathematics; equal
to ``forward(tokens)[:, ::2, 0]`` up to float rounding): the last block computes its queries,
attention output and MLP at the x positions only (keys and values at all positions); the
unembedding computes output component 0 only.

The residual stream, a named option (``RegressionTransformerConfig.residual``): the paper describes
the standard pre-LN block, ``"standard"``,

    h = x + attn(LN₁ x),   x ← h + mlp(LN₂ h),

but the authors' code (``DTransformer``) adds each block's output to its input *again*
(``x = x + block(x)`` with a block that already returns ``x + ...``), ``"paper_code"``:

    x ← x + (h + mlp(LN₂ h)) = 2x + attn(LN₁ x) + mlp(LN₂(x + attn(LN₁ x))),

which doubles the residual stream every layer: after two blocks the embeddings enter the final
LayerNorm with weight 4, the first block's outputs with 2 and the second's with 1. The parameters
and their initialisation are the same either way. ``"standard"`` is the default (its cache keys
leave the field out, so runs trained before the option existed keep their keys).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from stagewise.cache import HASH_OMIT_DEFAULT

__all__ = ["RegressionTransformerConfig", "RegressionTransformer", "count_parameters", "RESIDUALS"]

RESIDUALS = ("standard", "paper_code")


@dataclass(frozen=True)
class RegressionTransformerConfig:
    """Architecture of the regression transformer; defaults are the paper's (Table D.2)."""

    task_size: int = 4  # D
    max_examples: int = 8  # K
    n_layers: int = 2  # L
    n_heads: int = 4  # H
    d_embed: int = 64
    d_mlp: int = 64
    # "standard" pre-LN residual (the paper's text) or "paper_code" (the authors' doubled stream;
    # module docstring). Out of the cache key while "standard".
    residual: str = field(default="standard", metadata=HASH_OMIT_DEFAULT)

    def __post_init__(self):
        for name in ("task_size", "max_examples", "n_layers", "n_heads", "d_embed", "d_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
        if self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {', '.join(map(repr, RESIDUALS))}, got {self.residual!r}")
        if self.d_embed % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_embed ({self.d_embed})")

    @property
    def setting(self) -> str | None:
        """How a figure names this model's non-paper ingredient (``save_figure(setting=...)``):
        None for the paper's text, ``"residual=paper_code"`` for the authors' doubled stream."""
        return None if self.residual == "standard" else f"residual={self.residual}"

    @property
    def token_size(self) -> int:
        return self.task_size + 1

    @property
    def n_ctx(self) -> int:
        return 2 * self.max_examples


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: RegressionTransformerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.d_head = cfg.d_embed // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_embed, 3 * cfg.d_embed, bias=False)
        self.out = nn.Linear(cfg.d_embed, cfg.d_embed, bias=False)
        mask = torch.full((cfg.n_ctx, cfg.n_ctx), float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def attention_pattern(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities [B, H, T, T] for the (already layer-normed) input ``x``."""
        q, k, _ = self._qkv(x)
        return self._pattern(q, k)

    def _qkv(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        shape = (B, T, self.n_heads, self.d_head)
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))

    def _pattern(self, q, k):
        T = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head) + self.causal_mask[:T, :T]
        return scores.softmax(dim=-1)

    def forward(self, x: torch.Tensor, queries: slice | None = None) -> torch.Tensor:
        """Attention output at every position, or only at the query positions ``queries`` (a slice
        of the sequence axis; keys and values still at every position)."""
        if queries is None:
            B, T, C = x.shape
            q, k, v = self._qkv(x)
            y = self._pattern(q, k) @ v  # B H T d_head
            return self.out(y.transpose(1, 2).reshape(B, T, C))
        B, T, C = x.shape
        w_q, w_kv = self.qkv.weight.split([C, 2 * C])
        xq = x[:, queries]
        Tq = xq.shape[1]
        k, v = F.linear(x, w_kv).split(C, dim=-1)
        q = F.linear(xq, w_q).view(B, Tq, self.n_heads, self.d_head).transpose(1, 2)
        k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for t in (k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head) + self.causal_mask[:T, :T][queries]
        y = scores.softmax(dim=-1) @ v  # B H Tq d_head
        return self.out(y.transpose(1, 2).reshape(B, Tq, C))


class Block(nn.Module):
    def __init__(self, cfg: RegressionTransformerConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_embed)
        self.attn = CausalSelfAttention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.d_embed)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_embed, cfg.d_mlp), nn.ReLU(), nn.Linear(cfg.d_mlp, cfg.d_embed))
        self.doubled = cfg.residual == "paper_code"

    def forward(self, x: torch.Tensor, queries: slice | None = None) -> torch.Tensor:
        """The residual stream after the block, at every position or only at ``queries`` (see the
        attention's): h + mlp(LN₂ h) with h = x + attn(LN₁ x), plus x once more for ``"paper_code"``."""
        a = self.attn(self.ln_attn(x), queries)
        x = x if queries is None else x[:, queries]
        h = x + a
        h = h + self.mlp(self.ln_mlp(h))
        return x + h if self.doubled else h


class RegressionTransformer(nn.Module):
    """Maps token sequences [B, 2K, D+1] to outputs of the same shape; ŷ_k = out[:, 2k, 0]."""

    def __init__(self, cfg: RegressionTransformerConfig = RegressionTransformerConfig()):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Linear(cfg.token_size, cfg.d_embed, bias=False)
        self.pos_embedding = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_embed))
        nn.init.uniform_(self.pos_embedding, -1 / math.sqrt(cfg.n_ctx), 1 / math.sqrt(cfg.n_ctx))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_embed)
        self.unembedding = nn.Linear(cfg.d_embed, cfg.token_size)

    def residual_stream(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Residual stream before each block and after the last one (L + 1 tensors [B, T, d])."""
        self._check_tokens(tokens)
        x = self.token_embedding(tokens) + self.pos_embedding[: tokens.shape[1]]
        streams = [x]
        for block in self.blocks:
            x = block(x)
            streams.append(x)
        return streams

    def attention_patterns(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of every head, [B, L, H, T, T]."""
        streams = self.residual_stream(tokens)
        pats = [blk.attn.attention_pattern(blk.ln_attn(x)) for blk, x in zip(self.blocks, streams[:-1])]
        return torch.stack(pats, dim=1)

    def forward(self, tokens: torch.Tensor, predictions_only: bool = False) -> torch.Tensor:
        """Outputs [B, T, D+1]; with ``predictions_only``, just ŷ [B, ⌈T/2⌉] = outputs[:, ::2, 0],
        computed at the x positions only (see the module docstring)."""
        self._check_tokens(tokens)
        if predictions_only:
            return self._predictions(tokens)
        x = self.token_embedding(tokens) + self.pos_embedding[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.unembedding(self.ln_final(x))

    def _predictions(self, tokens: torch.Tensor) -> torch.Tensor:
        # The trailing y token is causally unread but kept: a key axis of 2K (16) rather than 2K − 1
        # keeps CPU softmax on its vectorised path (measured ~10x faster than at length 15).
        T = tokens.shape[1]
        x = self.token_embedding(tokens) + self.pos_embedding[:T]
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.ln_final(self.blocks[-1](x, queries=slice(0, T, 2)))
        return x @ self.unembedding.weight[0] + self.unembedding.bias[0]

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predictions ŷ_k read from the x_k positions (first output component), [B, K]."""
        return self(tokens, predictions_only=True)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 3 or tokens.shape[-1] != self.cfg.token_size:
            raise ValueError(
                f"tokens must have shape [batch, 2K, D+1] with D+1 = {self.cfg.token_size} "
                f"(model task_size D = {self.cfg.task_size}); got {tuple(tokens.shape)}"
            )
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds the model's context 2K = {self.cfg.n_ctx} "
                f"(max_examples K = {self.cfg.max_examples})"
            )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
