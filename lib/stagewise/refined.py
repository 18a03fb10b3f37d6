"""Weight-refined LLC of attention heads (Wang et al., refined LLC; shared/refined-llc.md).

The wrLLC λ̂(w*; V) samples only the weights V of one head — its W_Q, W_K, W_V, W_O and biases
b_Q, b_K, b_V — with every other weight frozen at w*. In TransformerLens these are slices along the
head axis of ``blocks.{l}.attn.W_*`` / ``b_*``; the shared output bias b_O belongs to no head and is
frozen (the paper's "biases" of a head are its per-head ones).
"""

from __future__ import annotations

import torch

__all__ = ["HEAD_PARAMS", "head_param_mask", "head_labels"]

HEAD_PARAMS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


def head_param_mask(model: torch.nn.Module, layer: int, head: int) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``(params_to_sample, param_mask)`` selecting exactly head ``layer:head`` of a HookedTransformer,
    for :func:`stagewise.llc.estimate_llc_module`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers - 1}], got {layer}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head must be in [0, {n_heads - 1}], got {head}")
    params = dict(model.named_parameters())
    names, masks = [], {}
    for p in HEAD_PARAMS:
        name = f"blocks.{layer}.attn.{p}"
        mask = torch.zeros_like(params[name], dtype=torch.bool)
        mask[head] = True
        names.append(name)
        masks[name] = mask
    return names, masks


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """Head names ``layer:head`` indexed from 0, as in the refined-LLC paper (e.g. ``1:6``)."""
    return [f"{l}:{h}" for l in range(n_layers) for h in range(n_heads)]
