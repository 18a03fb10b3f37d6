"""LLC of nn.Modules and TransformerLens models through functional_call (no mutation, refined LLC)."""

import warnings

import numpy as np
import pytest
import torch

from stagewise.data.regression import RegressionTask, regression_loss, sample_batch
from stagewise.llc import SGLDConfig, estimate_llc, estimate_llc_module, module_loss_fn
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig


def _tiny_regression():
    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig(n_layers=1, n_heads=2, d_embed=8, d_mlp=8))
    batch = sample_batch(RegressionTask(), 128, torch.Generator().manual_seed(0))
    return model, (batch.tokens, batch.ys)


def test_module_wrapper_matches_pure_function_and_leaves_model_unchanged():
    model, data = _tiny_regression()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SGLDConfig(epsilon=1e-4, gamma=100.0, num_chains=2, num_draws=15, num_burnin=5, batch_size=32, seed=0)
    r = estimate_llc_module(model, regression_loss, data, cfg, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())

    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def pure(p, batch):
        tokens, ys = batch
        return ((torch.func.functional_call(model, p, (tokens,))[:, ::2, 0] - ys) ** 2).mean()

    r2 = estimate_llc(pure, params, cfg, data=data, progress=False)
    np.testing.assert_allclose(r.loss_trace, r2.loss_trace, rtol=1e-6)
    assert np.isfinite(r.llc_mean)


def test_active_dropout_rejected():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    with pytest.raises(ValueError, match="eval"):
        module_loss_fn(model, lambda f, b: f(b).sum())


@pytest.fixture(scope="module")
def hooked():
    import transformer_lens as tl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = tl.HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=20,
                                         attn_only=True, act_fn=None, normalization_type="LN",
                                         positional_embedding_type="shortformer", seed=0)
        return tl.HookedTransformer(cfg).eval()


def _lm_loss(forward, tokens):
    return forward(tokens, return_type="loss")


def test_hooked_transformer_head_refined_llc(hooked):
    tokens = torch.randint(0, 20, (64, 8), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in hooked.state_dict().items()}
    head = torch.zeros(2, 16, 8, dtype=torch.bool)
    head[1] = True  # weight-refined LLC of head 1's query weights only
    seen = []

    def loss(forward, batch):
        return _lm_loss(forward, batch)

    loss_fn, params = module_loss_fn(hooked, loss)

    def recording(p, batch):
        seen.append({k: v.detach().clone() for k, v in p.items()})
        return loss_fn(p, batch)

    cfg = SGLDConfig(epsilon=1e-4, gamma=100.0, num_chains=2, num_draws=10, num_burnin=2, batch_size=16, seed=0)
    r = estimate_llc(recording, params, cfg, data=tokens, params_to_sample=["blocks.0.attn.W_Q"],
                     param_mask={"blocks.0.attn.W_Q": head}, progress=False)
    assert r.num_sampled == 16 * 8 and np.isfinite(r.llc_mean)
    for s in seen:
        for k, v in s.items():
            if k == "blocks.0.attn.W_Q":
                assert torch.equal(v[0], before[k][0])
            else:
                assert torch.equal(v, before[k]), k
    assert any(not torch.equal(s["blocks.0.attn.W_Q"][1], before["blocks.0.attn.W_Q"][1]) for s in seen)
    for k, v in hooked.state_dict().items():
        assert torch.equal(v, before[k])
    # the module wrapper gives the same chain
    r2 = estimate_llc_module(hooked, _lm_loss, tokens, cfg, params_to_sample=["blocks.0.attn.W_Q"],
                             param_mask={"blocks.0.attn.W_Q": head}, progress=False)
    np.testing.assert_allclose(r2.loss_trace, r.loss_trace, rtol=1e-6)


def test_cuda_graph_bookkeeping_equals_vmap_bit_for_bit(monkeypatch):
    """cuda_graph=True: the step on static buffers (batch and noise copied in, theta updated in
    place, the capture's warm-up undone). On a CPU the same bookkeeping runs eagerly
    (``capture=False``): every draw, ℓ(w*) and burn-in loss equals chain_mode='vmap' exactly, so the
    warm-up moved nothing, the noise streams were not advanced by the example noise, and the batch
    order is the eager one. A masked (weight-refined) run as well."""
    import stagewise.llc.sampler as S

    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig(n_layers=1, d_embed=16, d_mlp=16, n_heads=2)).eval()
    b = sample_batch(RegressionTask(), 96, torch.Generator().manual_seed(1))
    data = (b.tokens, b.ys)
    cfg = SGLDConfig(epsilon=1e-4, gamma=100.0, nbeta=30.0, num_chains=3, num_draws=7, num_burnin=3, batch_size=32,
                     seed=5)
    monkeypatch.setattr(S, "_check_graph_setting", lambda *a: None)  # allow the eager replay on a CPU
    for kw in ({}, {"params_to_sample": ["blocks.0.attn.qkv.weight"]}):
        ref = estimate_llc_module(model, regression_loss, data, cfg, chain_mode="vmap", progress=False, **kw)
        got = estimate_llc_module(model, regression_loss, data, cfg, chain_mode="vmap", cuda_graph=True,
                                  progress=False, **kw)
        np.testing.assert_array_equal(got.loss_trace, ref.loss_trace)
        np.testing.assert_array_equal(got.burnin_loss_trace, ref.burnin_loss_trace)
        np.testing.assert_array_equal(got.loss_init_trace, ref.loss_init_trace)
        assert got.llc_mean == ref.llc_mean and got.num_sampled == ref.num_sampled


def test_cuda_graph_refuses_settings_it_cannot_capture():
    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig(n_layers=1, d_embed=16, d_mlp=16, n_heads=2)).eval()
    b = sample_batch(RegressionTask(), 32, torch.Generator().manual_seed(1))
    cfg = SGLDConfig(epsilon=1e-4, gamma=100.0, nbeta=30.0, num_chains=2, num_draws=2, num_burnin=0, batch_size=16)
    with pytest.raises(ValueError, match="CUDA device, got 'cpu'"):
        estimate_llc_module(model, regression_loss, (b.tokens, b.ys), cfg, cuda_graph=True, progress=False)
    from stagewise.llc.sampler import _check_graph_setting

    with pytest.raises(ValueError, match="chain_mode must be 'vmap' or 'auto', got 'loop'"):
        _check_graph_setting(torch.device("cuda"), "loop", False, (b.tokens,))
    with pytest.raises(ValueError, match="choose one"):
        _check_graph_setting(torch.device("cuda"), "vmap", True, (b.tokens,))
    with pytest.raises(ValueError, match="needs data"):
        _check_graph_setting(torch.device("cuda"), "vmap", False, None)
