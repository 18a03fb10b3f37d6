"""LLC of an ``nn.Module`` (including TransformerLens ``HookedTransformer``) via ``functional_call``.

The module is never modified: the SGLD weights are substituted for one call at a time by
``torch.func.functional_call``, so the model's own parameters stay w* (the code-session bug of
restoring a mutated model cannot happen).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch.func import functional_call

from stagewise.llc.sampler import Data, LLCResult, SGLDConfig, estimate_llc

__all__ = ["module_loss_fn", "estimate_llc_module"]

ModuleLoss = Callable[[Callable[..., Any], Any], torch.Tensor]


def _check_no_active_dropout(model: torch.nn.Module) -> None:
    if model.training:
        active = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
        if active:
            raise ValueError(f"model is in training mode with active dropout {active[:5]}: SGLD needs a deterministic "
                             "loss; call model.eval() first")


def module_loss_fn(model: torch.nn.Module, loss: ModuleLoss):
    """Turn ``loss(forward, batch)`` into a pure ``loss_fn(params, batch)`` for :func:`estimate_llc`.

    ``forward(*args, **kwargs)`` is the model's forward pass with the sampled weights (buffers as in
    the model), e.g. ``loss = lambda f, b: ((f(b[0])[:, ::2, 0] - b[1]) ** 2).mean()`` or, for a
    HookedTransformer, ``lambda f, tokens: f(tokens, return_type="loss")``. Only the forward pass is
    substituted: a loss that calls other methods of the model (``model.predict``) would see the
    original weights, so it gets the forward function, not the model.
    Returns ``(loss_fn, params)`` with params = the module's parameters (detached) as w*.
    """
    _check_no_active_dropout(model)
    buffers = dict(model.named_buffers())
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_fn(p: Mapping[str, torch.Tensor], batch) -> torch.Tensor:
        def forward(*args, **kwargs):
            return functional_call(model, (dict(p), buffers), args, kwargs)

        return loss(forward, batch)

    return loss_fn, params


def estimate_llc_module(
    model: torch.nn.Module,
    loss: ModuleLoss,
    data: Data,
    config: SGLDConfig,
    *,
    params_to_sample: Sequence[str] | Callable[[str], bool] | None = None,
    param_mask: Mapping[str, torch.Tensor] | None = None,
    **kwargs,
) -> LLCResult:
    """:func:`estimate_llc` at the module's current weights w* (SGLD eq. 8, estimator eq. 5).

    ``loss(forward, batch) -> scalar`` (see :func:`module_loss_fn`); ``data`` a Tensor or tuple of
    Tensors (rows along dim 0); ``params_to_sample`` / ``param_mask`` use the module's parameter
    names (``model.named_parameters()``, e.g. ``"blocks.0.attn.W_Q"``) for the weight-refined LLC.
    Extra keyword arguments go to :func:`estimate_llc` (chain_mode, compile, progress).
    """
    loss_fn, params = module_loss_fn(model, loss)
    return estimate_llc(loss_fn, params, config, data, params_to_sample=params_to_sample,
                        param_mask=param_mask, **kwargs)
