"""A plain-torch twin of the paper's attention-only ``HookedTransformer``, for SGLD speed.

:class:`FastAttentionOnlyLM` computes the same function as
:func:`stagewise.models.language.make_language_model` (Shortformer positional embedding added to
the queries' and keys' inputs only, LayerNorm before each attention layer and the unembedding),
with the same parameter names and shapes (``embed.W_E``, ``blocks.0.attn.W_Q`` [H, d, d_head],
...), so a TransformerLens checkpoint loads into it unchanged and the refined LLC's per-head
parameter masks apply as they are. It is what the LLC sweeps run; probes, hooks and training keep
TransformerLens. ``tests/test_language_fast.py`` checks logits and gradients against it.

Why it is faster on a CPU (measured: ``benchmarks/results/llc_benchmark.md``), with no change of
mathematics:

* Q and K of all heads in one matmul (TransformerLens: one einsum per projection), LayerNorm as
  ``F.layer_norm`` (TransformerLens: five elementwise passes), no hook points, and no
  ``where(isnan(pattern), 0, pattern)`` pass over every attention pattern;
* attention by ``F.scaled_dot_product_attention`` (a fused causal kernel) outside ``vmap``, and by
  explicit matmuls + softmax inside it (no CPU batching rule for the fused kernel);
* :meth:`FastAttentionOnlyLM.forward` with ``positions`` returns logits at those positions only,
  and computes the last block's queries, attention and output there only (keys and values at
  every position), like the regression transformer's predictions-only forward. With the
  position-subsampled SGLD loss (one position in ``stride`` per context) this skips ~3/4 of the
  last layer's query-side work and of the 256 x 5000 unembedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from stagewise.models.language import LanguageModelConfig, subsampled_positions

__all__ = ["FastAttentionOnlyLM", "HeadChainLM", "make_fast_language_model", "make_head_chain_language_model",
           "make_trainable_fast_language_model", "lm_fast_loss", "lm_fast_train_loss", "twin_of"]

LN_EPS = 1e-5  # TransformerLens' default LayerNorm eps


def _under_functorch(x: Tensor) -> bool:
    """True inside a torch.func transform (vmap over chains wraps its inputs: there the fused
    attention kernel has no CPU batching rule and would fall back to a per-example loop)."""
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # a torch without this internal: take the path that is always batched
        return True


class _LayerNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, LN_EPS)


# the bf16 numerics revision the plain-torch models name in the LLC cache key
# (stagewise.llc.sweep.sweep_cache_key): 2 = the attention in fp32 under bf16 autocast on a CPU (_attention)
BF16_NUMERICS = 2


def _attention(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention``, in float32 on a CPU under bf16 autocast (the SGLD chains'
    ``compute_dtype="bfloat16"``): torch's CPU flash attention is slower in bf16 than in fp32 for
    these shapes, backward ~3x (16 vs 5.5 ms per call at the `cpu` LM's SGLD batch, one Intel Xeon
    thread with AMX), so a bf16 chain-step ran 12-13% faster with the attention in fp32 (docs/guide/llc.md,
    benchmarks/results/sgld_step_cpu.json). The matmuls around it stay bf16; the result is float32,
    which autocast casts back where the next matmul needs it. Elsewhere (fp32, GPU) unchanged."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class _Attention(nn.Module):
    def __init__(self, cfg: LanguageModelConfig):
        super().__init__()
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        # registered in TransformerLens' order, so that the SGLD engine's flat parameter vector (and
        # with it the seeded noise each weight receives) is the same as for the HookedTransformer
        self.W_Q = nn.Parameter(torch.empty(H, d, dh))
        self.W_O = nn.Parameter(torch.empty(H, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(H, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.W_K = nn.Parameter(torch.empty(H, d, dh))
        self.W_V = nn.Parameter(torch.empty(H, d, dh))
        self.b_K = nn.Parameter(torch.zeros(H, dh))
        self.b_V = nn.Parameter(torch.zeros(H, dh))
        # TransformerLens keeps these buffers in every state_dict; registered so its checkpoints load
        # strictly (they are not used: the causal mask is built here)
        self.register_buffer("mask", torch.zeros(0, 0, dtype=torch.bool))
        self.register_buffer("IGNORE", torch.tensor(float("-inf")))

    @staticmethod
    def _fused(w: Tensor) -> Tensor:  # [H, d, dh] -> [d, H * dh]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)

    def forward(self, qk_in: Tensor, v_in: Tensor, queries: Tensor | None, heads: Tensor | None = None) -> Tensor:
        """``qk_in`` = LN(x) + positional embedding, ``v_in`` = LN(x), both [B, T, d]; ``queries``
        None (every position) or [B, P] positions at which to compute the output. ``heads`` (head
        indices): the sum of those heads' outputs only, without the shared bias b_O."""
        if heads is None:
            W_Q, W_K, W_V, W_O, b_Q, b_K, b_V = (self.W_Q, self.W_K, self.W_V, self.W_O, self.b_Q, self.b_K,
                                                 self.b_V)
        else:
            W_Q, W_K, W_V, W_O, b_Q, b_K, b_V = (t[heads] for t in (self.W_Q, self.W_K, self.W_V, self.W_O, self.b_Q,
                                                                    self.b_K, self.b_V))
        B, T, d = v_in.shape
        H, dh = W_Q.shape[0], W_Q.shape[2]
        w_q, w_k = self._fused(W_Q), self._fused(W_K)
        v = (v_in @ self._fused(W_V) + b_V.reshape(-1)).view(B, T, H, dh).transpose(1, 2)
        if queries is None:
            q, k = (qk_in @ torch.cat([w_q, w_k], 1) + torch.cat([b_Q.reshape(-1), b_K.reshape(-1)])).split(
                H * dh, dim=-1)
            P = T
        else:
            k = qk_in @ w_k + b_K.reshape(-1)
            P = queries.shape[1]
            q = torch.gather(qk_in, 1, queries[:, :, None].expand(B, P, d)) @ w_q + b_Q.reshape(-1)
        q = q.reshape(B, P, H, dh).transpose(1, 2)
        k = k.reshape(B, T, H, dh).transpose(1, 2)
        if queries is None:
            allowed = torch.ones(T, T, dtype=torch.bool, device=v_in.device).tril()
        else:  # key j is visible to the query at position p iff j <= p
            allowed = (torch.arange(T, device=v_in.device)[None, None, :] <= queries[:, :, None])[:, None]
        if _under_functorch(q):
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
            z = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v
        elif queries is None:
            z = _attention(q, k, v, is_causal=True)
        else:
            z = _attention(q, k, v, attn_mask=allowed)
        out = z.transpose(1, 2).reshape(B, P, H * dh) @ W_O.reshape(H * dh, d)
        return out + self.b_O if heads is None else out


class _Block(nn.Module):
    def __init__(self, cfg: LanguageModelConfig):
        super().__init__()
        self.ln1 = _LayerNorm(cfg.d_model)
        self.attn = _Attention(cfg)

    def forward(self, x: Tensor, pos: Tensor, queries: Tensor | None) -> Tensor:
        h = self.ln1(x)
        out = self.attn(h + pos, h, queries)
        if queries is None:
            return x + out
        return torch.gather(x, 1, queries[:, :, None].expand(-1, -1, x.shape[-1])) + out


class _Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))


class _PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


class _Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab))
        self.b_U = nn.Parameter(torch.zeros(d_vocab))


class FastAttentionOnlyLM(nn.Module):
    """The attention-only LM of App. D.1.1 with TransformerLens' parameter names (see module doc).

    Build it with :func:`make_fast_language_model` and load a checkpoint of the TransformerLens
    model into it; its own initial weights are placeholders (zeros/ones), never trained from.
    """

    def __init__(self, cfg: LanguageModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = _Embed(cfg.d_vocab, cfg.d_model)
        self.pos_embed = _PosEmbed(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = _LayerNorm(cfg.d_model)
        self.unembed = _Unembed(cfg.d_model, cfg.d_vocab)
        for p in self.parameters():  # deterministic placeholders until a checkpoint is loaded
            if p.dim() > 1:
                nn.init.zeros_(p)

    def _check_inputs(self, tokens: Tensor, positions: Tensor | None) -> int:
        """The number of positions T of ``tokens`` [B, T], after checking both inputs' shapes."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
        T = tokens.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"tokens have {T} positions but the model's n_ctx is {self.cfg.n_ctx}")
        if positions is not None and (positions.dim() != 2 or positions.shape[0] != tokens.shape[0]):
            raise ValueError(f"positions must have shape [batch={tokens.shape[0]}, P], got {tuple(positions.shape)}")
        return T

    def _logits(self, x: Tensor) -> Tensor:
        # the bias inside the matmul (addmm): a separate add over [B, T, d_vocab] cost ~20% of a forward
        return F.linear(self.ln_final(x), self.unembed.W_U.T, self.unembed.b_U)

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """Logits [B, T, d_vocab], or [B, P, d_vocab] at ``positions`` [B, P] (row b's positions)."""
        T = self._check_inputs(tokens, positions)
        x = self.embed.W_E[tokens]
        pos = self.pos_embed.W_pos[:T]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, pos, positions if i == last else None)
        if positions is not None and not self.blocks:
            x = torch.gather(x, 1, positions[:, :, None].expand(-1, -1, x.shape[-1]))
        return self._logits(x)

    @torch.no_grad()
    def attention_rows(self, tokens: Tensor, queries: Tensor) -> list[Tensor]:
        """Every layer's attention pattern at the query positions ``queries`` [B, P] (row b's
        positions): one [B, n_heads, P, T] tensor per layer, what TransformerLens'
        ``attn.hook_pattern`` holds at those rows. Each layer's scores are computed at the queries
        only; the residual stream the next layer reads is the full forward's."""
        T = self._check_inputs(tokens, queries)
        if queries is None or queries.dtype not in (torch.int32, torch.int64):
            raise ValueError("queries must be an integer tensor [batch, P] of positions")
        if len(queries) and (int(queries.min()) < 0 or int(queries.max()) >= T):
            raise ValueError(f"queries must lie in [0, {T - 1}] for {T} positions")
        x = self.embed.W_E[tokens]
        pos = self.pos_embed.W_pos[:T]
        B, P = queries.shape
        allowed = (torch.arange(T, device=tokens.device)[None, None, :] <= queries[:, :, None])[:, None]
        out = []
        for i, block in enumerate(self.blocks):
            attn = block.attn
            qk_in = block.ln1(x) + pos
            H, dh = attn.W_Q.shape[0], attn.W_Q.shape[2]
            q = torch.gather(qk_in, 1, queries[:, :, None].expand(B, P, qk_in.shape[-1])) @ attn._fused(attn.W_Q)
            q = (q + attn.b_Q.reshape(-1)).view(B, P, H, dh).transpose(1, 2)
            k = (qk_in @ attn._fused(attn.W_K) + attn.b_K.reshape(-1)).view(B, T, H, dh).transpose(1, 2)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
            out.append(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1))
            if i < len(self.blocks) - 1:
                x = block(x, pos, None)
        return out


class HeadChainLM(FastAttentionOnlyLM):
    """:class:`FastAttentionOnlyLM` for SGLD chains that move only some heads of one layer (the
    weight-refined LLC): the same parameters (names, shapes, order: the same flat vector and seeded
    noise in the engine), the same function to float rounding, computed in two parts.

    Everything upstream of the free heads' outputs — the embeddings, the earlier blocks, the layer's
    LayerNorm and the other heads' summed output plus b_O — depends only on frozen weights, so
    :meth:`forward` computes it once per batch under ``no_grad`` and reuses it while the batch and
    those weights are unchanged: the SGLD engine evaluates ℓ(w*) and every chain on the same batch
    each step, so the prefix is computed once for all of them, and the backward pass runs through
    the free heads, the blocks after them and the unembedding only (for a layer-1 head of the
    two-layer model, not through layer 0 nor the other seven heads). Whether the prefix may be
    reused is decided by comparing values (the tokens, the query positions and every weight the
    prefix read), never by identity, so a changed weight or batch always recomputes it. Inside a
    ``torch.func`` transform (vmapped chains), or when a gradient is wanted for a weight that only
    the prefix reads (the embeddings, an earlier block, the layer's LayerNorm or b_O), it is the
    plain model's forward. The free layer's W_Q, W_K, W_V, W_O and per-head biases are shared
    tensors: the gradient reaches their free heads' slices only, so sample them with a mask that
    selects those slices (:func:`stagewise.refined.heads_param_mask`), as the refined-LLC sweeps do.
    """

    def __init__(self, cfg: LanguageModelConfig, layer: int, heads: tuple[int, ...]):
        super().__init__(cfg)
        if not isinstance(layer, int) or not 0 <= layer < cfg.n_layers:
            raise ValueError(f"layer must be an integer in [0, {cfg.n_layers - 1}], got {layer!r}")
        heads = tuple(heads)
        if not heads or len(set(heads)) != len(heads) or not all(isinstance(h, int) and 0 <= h < cfg.n_heads
                                                                  for h in heads):
            raise ValueError(f"heads must be distinct head indices in [0, {cfg.n_heads - 1}], got {heads!r}")
        self.free_layer, self.free_heads = layer, tuple(sorted(heads))
        self._free = torch.tensor(self.free_heads)
        self._fixed = torch.tensor([h for h in range(cfg.n_heads) if h not in self.free_heads], dtype=torch.long)
        self._prefix: tuple | None = None  # (inputs, weights it read, (qk_in, v_in, base)) of the last batch

    def _prefix_tensors(self) -> list[Tensor]:
        """The weights that only the prefix reads (whole tensors)."""
        L, attn = self.free_layer, self.blocks[self.free_layer].attn
        out = [self.embed.W_E, self.pos_embed.W_pos]
        for block in self.blocks[:L]:
            out.extend(block.parameters())
        return out + [self.blocks[L].ln1.w, self.blocks[L].ln1.b, attn.b_O]

    def _prefix_weights(self) -> list[Tensor]:
        """Every weight value the prefix reads (the other heads' slices of the free layer too)."""
        out = self._prefix_tensors()
        attn = self.blocks[self.free_layer].attn
        fixed = self._fixed.to(attn.W_Q.device)
        out.extend(t[fixed] for t in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O, attn.b_Q, attn.b_K, attn.b_V))
        return out

    def _compute_prefix(self, tokens: Tensor, queries: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        L = self.free_layer
        x = self.embed.W_E[tokens]
        pos = self.pos_embed.W_pos[:tokens.shape[1]]
        for block in self.blocks[:L]:
            x = block(x, pos, None)
        h = self.blocks[L].ln1(x)
        attn = self.blocks[L].attn
        fixed = (attn(h + pos, h, queries, heads=self._fixed.to(h.device)) if len(self._fixed)
                 else torch.zeros((), dtype=h.dtype, device=h.device))
        if queries is not None:
            x = torch.gather(x, 1, queries[:, :, None].expand(-1, -1, x.shape[-1]))
        return h + pos, h, x + fixed + attn.b_O

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        W_Q = self.blocks[self.free_layer].attn.W_Q
        if (_under_functorch(W_Q) or _under_functorch(self.embed.W_E)
                or (torch.is_grad_enabled() and any(t.requires_grad for t in self._prefix_tensors()))):
            # vmapped chains, or a gradient wanted for a weight upstream of the free heads
            return super().forward(tokens, positions)
        T = self._check_inputs(tokens, positions)
        last = len(self.blocks) - 1
        L = self.free_layer
        queries = positions if L == last else None
        with torch.no_grad():
            weights = [w.detach() for w in self._prefix_weights()]
            inputs = (tokens, positions)
            cached = self._prefix
            if not (cached is not None and _same(cached[0], inputs) and _same(cached[1], weights)):
                cached = ((tokens.clone(), None if positions is None else positions.clone()),
                          [w.clone() for w in weights], self._compute_prefix(tokens, queries))
                self._prefix = cached
            qk_in, v_in, base = cached[2]
        attn = self.blocks[L].attn
        x = base + attn(qk_in, v_in, queries, heads=self._free.to(base.device))
        pos = self.pos_embed.W_pos[:T]
        for i in range(L + 1, len(self.blocks)):
            x = self.blocks[i](x, pos, positions if i == last else None)
        return self._logits(x)


def _same(a, b) -> bool:
    """Equal nested tuples/lists of tensors (None where both are None), compared by value."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def make_head_chain_language_model(config: LanguageModelConfig, layer: int, heads: tuple[int, ...]) -> HeadChainLM:
    """A :class:`HeadChainLM` of ``config`` whose chains move ``heads`` of ``layer`` (load a
    checkpoint into it before use)."""
    return HeadChainLM(config, layer, heads)


make_head_chain_language_model.bf16_numerics = BF16_NUMERICS


def make_fast_language_model(config: LanguageModelConfig) -> FastAttentionOnlyLM:
    """A :class:`FastAttentionOnlyLM` of ``config`` (load a checkpoint into it before use)."""
    return FastAttentionOnlyLM(config)


make_fast_language_model.bf16_numerics = BF16_NUMERICS


def make_trainable_fast_language_model(config: LanguageModelConfig) -> FastAttentionOnlyLM:
    """A :class:`FastAttentionOnlyLM` holding exactly the initial weights
    :func:`~stagewise.models.language.make_language_model` would draw from the global RNG (the
    TransformerLens model is built, then copied): training it is training the paper's model with a
    faster forward (the language profile's ``train_model = "fast"``)."""
    from stagewise.models.language import make_language_model

    twin = FastAttentionOnlyLM(config)
    twin.load_state_dict(make_language_model(config).state_dict())
    return twin


def twin_of(model, zero_positional: bool = False) -> FastAttentionOnlyLM | None:
    """A :class:`FastAttentionOnlyLM` holding ``model``'s weights (a copy; ``model`` is untouched), or
    None where ``model`` is not the paper's architecture (attention-only, LayerNorm, Shortformer
    positional embedding, d_head = d_model / n_heads). ``zero_positional`` zeroes the copy's W_pos:
    the function of the TransformerLens model with ``hook_pos_embed`` zero-ablated. The probes'
    validation passes run it (same logits to float rounding, ~2-3x faster on a CPU thread)."""
    if isinstance(model, FastAttentionOnlyLM):
        twin = model
    else:
        cfg = getattr(model, "cfg", None)
        if cfg is None or not (getattr(cfg, "attn_only", False) and getattr(cfg, "normalization_type", None) == "LN"
                               and getattr(cfg, "positional_embedding_type", None) == "shortformer"
                               and cfg.d_head * cfg.n_heads == cfg.d_model):
            return None
        twin = FastAttentionOnlyLM(LanguageModelConfig(n_layers=cfg.n_layers, n_ctx=cfg.n_ctx, d_model=cfg.d_model,
                                                       n_heads=cfg.n_heads, d_vocab=cfg.d_vocab))
        try:
            twin.load_state_dict(model.state_dict())
        except RuntimeError:  # other parameter names or shapes: not the twin's architecture
            return None
    if zero_positional:
        if twin is model:
            twin = FastAttentionOnlyLM(model.cfg)
            twin.load_state_dict(model.state_dict())
        with torch.no_grad():
            twin.pos_embed.W_pos.zero_()
    return twin.eval()


def lm_fast_train_loss(model: FastAttentionOnlyLM, batch) -> Tensor:
    """:func:`~stagewise.models.language.lm_loss` for the twin (the training loop's
    ``loss_fn(model, batch)``): next-token cross-entropy over every predicted position."""
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must have shape [batch, pos >= 2], got {tuple(tokens.shape)}")
    if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
        raise ValueError(f"token ids must lie in [0, d_vocab={model.cfg.d_vocab}); got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    return lm_fast_loss(model, tokens)


def lm_fast_loss(forward, batch, stride: int = 1) -> Tensor:
    """Next-token cross-entropy for the LLC engine's ``loss(forward, batch)`` convention with a
    :class:`FastAttentionOnlyLM`: every position (``stride=1``, = :func:`~stagewise.models.language.lm_forward_loss`)
    or the positions of :func:`~stagewise.models.language.subsampled_positions` (row ``i`` predicts
    positions ``k ≡ i mod stride``; = :func:`~stagewise.models.language.lm_forward_loss_subsampled`)."""
    tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
    if stride == 1:
        # every position's logits, the last one's target ignored: no slice of the [B, T, d_vocab] logits
        # (a copy forward and a zero-filled buffer backward, ~15% of a CPU training step), the same mean
        logits = forward(tokens)
        targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
    else:
        pos = subsampled_positions(tokens.shape[0], tokens.shape[1], stride).to(tokens.device)
        logits = forward(tokens, positions=pos)
        targets = torch.gather(tokens, 1, pos + 1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
