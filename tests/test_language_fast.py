"""The plain-torch LM twin computes the TransformerLens model's function, loss and gradients."""

from functools import partial

import pytest
import torch

from stagewise.llc import SGLDConfig, estimate_llc_module
from stagewise.llc.module import module_loss_fn
from stagewise.models.language import (LanguageModelConfig, lm_forward_loss, lm_forward_loss_subsampled,
                                       make_language_model)
from stagewise.models.language_fast import FastAttentionOnlyLM, lm_fast_loss, make_fast_language_model

CFG = LanguageModelConfig(n_layers=2, n_ctx=24, d_model=32, n_heads=4, d_vocab=50)


def _trained_like(cfg=CFG, seed=0):
    """A TransformerLens model with every weight (biases, LayerNorms too) away from its init."""
    torch.manual_seed(seed)
    tl = make_language_model(cfg)
    with torch.no_grad():
        for p in tl.parameters():
            p.add_(0.2 * torch.randn_like(p))
    fast = make_fast_language_model(cfg)
    fast.load_state_dict(tl.state_dict())  # strict: same names, shapes, buffers
    return tl.eval(), fast.eval()


def test_same_parameter_names_shapes_and_order():
    """Same order too: the SGLD engine flattens parameters in this order, so both models' weights
    receive the same seeded noise."""
    tl, fast = _trained_like()
    assert [(n, p.shape) for n, p in tl.named_parameters()] == [(n, p.shape) for n, p in fast.named_parameters()]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_logits_match_transformer_lens(n_layers):
    cfg = LanguageModelConfig(n_layers=n_layers, n_ctx=24, d_model=32, n_heads=4, d_vocab=50)
    tl, fast = _trained_like(cfg)
    tokens = torch.randint(0, cfg.d_vocab, (3, 24), generator=torch.Generator().manual_seed(1))
    ref = tl(tokens, return_type="logits")
    torch.testing.assert_close(fast(tokens), ref, rtol=1e-4, atol=1e-4)
    # logits at chosen positions = the full logits gathered there (last block on those queries only)
    pos = torch.tensor([[0, 5, 23], [1, 2, 3], [22, 7, 0]])
    torch.testing.assert_close(fast(tokens, positions=pos), torch.gather(ref, 1, pos[:, :, None].expand(-1, -1, 50)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 4])
def test_loss_and_gradients_match(stride):
    tl, fast = _trained_like()
    tokens = torch.randint(0, CFG.d_vocab, (8, 24), generator=torch.Generator().manual_seed(2))
    ref_loss = lm_forward_loss if stride == 1 else partial(lm_forward_loss_subsampled, stride=stride)
    f_ref, p_ref = module_loss_fn(tl, ref_loss)
    f_fast, p_fast = module_loss_fn(fast, partial(lm_fast_loss, stride=stride))
    x_ref = {k: v.clone().requires_grad_(True) for k, v in p_ref.items()}
    x_fast = {k: v.clone().requires_grad_(True) for k, v in p_fast.items()}
    l_ref, l_fast = f_ref(x_ref, tokens), f_fast(x_fast, tokens)
    torch.testing.assert_close(l_fast, l_ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(l_ref, list(x_ref.values()))
    g_fast = torch.autograd.grad(l_fast, [x_fast[k] for k in x_ref])
    for name, a, b in zip(x_ref, g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_vmap_path_equals_fused_path():
    """Inside torch.func (vmap over chains) attention takes explicit matmuls: same numbers."""
    _, fast = _trained_like()
    tokens = torch.randint(0, CFG.d_vocab, (4, 24), generator=torch.Generator().manual_seed(3))
    f, params = module_loss_fn(fast, partial(lm_fast_loss, stride=4))
    direct = f(params, tokens)
    stacked = {k: v.unsqueeze(0).repeat(2, *([1] * v.dim())) for k, v in params.items()}
    batched = torch.func.vmap(lambda p: f(p, tokens))(stacked)
    torch.testing.assert_close(batched, direct.expand(2), rtol=1e-5, atol=1e-5)


def test_sgld_estimate_agrees_with_transformer_lens():
    """Same seed, noise and batches: λ̂ of the twin is the TransformerLens model's up to rounding."""
    tl, fast = _trained_like()
    data = torch.randint(0, CFG.d_vocab, (64, 24), generator=torch.Generator().manual_seed(4))
    cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=20.0, num_chains=2, num_draws=15, num_burnin=0, batch_size=8)
    ref = estimate_llc_module(tl, partial(lm_forward_loss_subsampled, stride=4), data, cfg, progress=False)
    got = estimate_llc_module(fast, partial(lm_fast_loss, stride=4), data, cfg, progress=False)
    assert abs(got.llc_mean - ref.llc_mean) < 1e-2 * max(1.0, abs(ref.llc_mean))
    assert got.diagnostics == ref.diagnostics


def test_bad_input_is_named():
    fast = FastAttentionOnlyLM(CFG)
    with pytest.raises(ValueError, match="n_ctx"):
        fast(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="positions"):
        fast(torch.zeros(2, 8, dtype=torch.long), positions=torch.zeros(3, 2, dtype=torch.long))


def test_twin_trains_like_the_transformer_lens_model():
    """Same seed: the trainable twin starts from the HookedTransformer's initial weights and a few
    AdamW steps move both to the same weights (up to float rounding)."""
    from stagewise.models.language import lm_loss
    from stagewise.models.language_fast import lm_fast_train_loss, make_trainable_fast_language_model

    data = torch.randint(0, CFG.d_vocab, (6, 4, 24), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    tl = make_language_model(CFG)
    torch.manual_seed(11)
    fast = make_trainable_fast_language_model(CFG)
    assert all(torch.equal(a, b) for a, b in zip(tl.state_dict().values(), fast.state_dict().values()))
    for model, loss_fn in ((tl, lm_loss), (fast, lm_fast_train_loss)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        for batch in data:
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()
    for (name, a), b in zip(tl.named_parameters(), fast.parameters()):
        if name.endswith("b_K"):
            # the loss does not depend on the key bias (softmax over keys is shift-invariant): its exact
            # gradient is 0, and Adam turns each model's rounding noise there into ±lr steps
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    with pytest.raises(ValueError, match="d_vocab"):
        lm_fast_train_loss(fast, torch.full((1, 4), CFG.d_vocab))


def test_language_run_with_the_twin_is_keyed_apart_and_loads_as_hooked_transformer(tmp_cache):
    import dataclasses

    from stagewise.profiles import get_profile
    from stagewise.runs import language_run

    smoke = get_profile("language", "smoke")
    tiny = dataclasses.replace(smoke.train, num_steps=3, num_linear=2, num_log=2)
    tl_run = language_run(dataclasses.replace(smoke, train=tiny, one_layer_steps=3), progress=False)
    fast_run = language_run(dataclasses.replace(smoke, train=tiny, one_layer_steps=3, train_model="fast"),
                            progress=False)
    assert tl_run.directory != fast_run.directory
    model = fast_run.load_model(int(fast_run.checkpoint_steps[-1]))
    assert type(model).__name__ == "HookedTransformer"
    a, b = tl_run.load_state(3), fast_run.load_state(3)
    for k in a:
        if not k.endswith("b_K"):  # see test_twin_trains_like_the_transformer_lens_model
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


def test_twin_of_copies_the_weights_and_ablates_the_positional_embedding():
    from stagewise.models.language_fast import twin_of

    tl, _ = _trained_like()
    tokens = torch.randint(0, CFG.d_vocab, (3, CFG.n_ctx), generator=torch.Generator().manual_seed(1))
    w_pos = tl.W_pos.detach().clone()
    twin = twin_of(tl)
    torch.testing.assert_close(twin(tokens), tl(tokens), rtol=1e-4, atol=1e-4)
    ablated = tl.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", lambda x, hook: torch.zeros_like(x))])
    torch.testing.assert_close(twin_of(tl, zero_positional=True)(tokens), ablated, rtol=1e-4, atol=1e-4)
    assert (ablated - tl(tokens)).abs().max() > 1e-2  # the ablation changes this model's function
    torch.testing.assert_close(tl.W_pos, w_pos, rtol=0, atol=0)  # the model itself is untouched
    torch.testing.assert_close(twin_of(twin, zero_positional=True)(tokens), ablated, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(twin(tokens), tl(tokens), rtol=1e-4, atol=1e-4)  # ... and so is a twin passed in


@pytest.mark.filterwarnings("ignore:.*HookedTransformer is deprecated")
def test_twin_of_declines_other_architectures():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from stagewise.models.language_fast import twin_of

    with_mlp = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=20,
                                                         d_mlp=32, act_fn="relu", normalization_type="LN"))
    assert twin_of(with_mlp) is None
    assert twin_of(torch.nn.Linear(3, 3)) is None


@pytest.mark.parametrize("ablate", [False, True])
def test_validation_pass_through_the_twin_equals_the_hooked_transformer(ablate, monkeypatch):
    """The probes' validation passes run the twin: the same per-token losses as the TransformerLens
    forward (with its hook for the positional ablation), to float rounding."""
    import stagewise.models.language_fast as LF
    from stagewise.probes.language_behaviour import _validation_pass

    tl, _ = _trained_like()
    tokens = torch.randint(0, CFG.d_vocab, (5, CFG.n_ctx), generator=torch.Generator().manual_seed(2))
    fast, _ = _validation_pass(tl, tokens, batch_size=2, ablate_positional=ablate)
    monkeypatch.setattr(LF, "twin_of", lambda model, zero_positional=False: None)
    reference, _ = _validation_pass(tl, tokens, batch_size=2, ablate_positional=ablate)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# HeadChainLM: chains that move some heads of one layer
# --------------------------------------------------------------------------------------------

from stagewise.models.language_fast import HeadChainLM, make_head_chain_language_model  # noqa: E402
from stagewise.refined import heads_param_mask  # noqa: E402


def _head_chain(layer, heads, cfg=CFG):
    _, fast = _trained_like(cfg)
    chain = make_head_chain_language_model(cfg, layer, heads)
    chain.load_state_dict(fast.state_dict())  # strict: the same parameters and buffers
    return fast, chain.eval()


@pytest.mark.parametrize("layer,heads,stride", [(0, (1,), 4), (1, (3,), 4), (1, (0, 2), 1), (0, (0, 1, 2, 3), 4)])
def test_head_chain_loss_and_free_heads_gradients_equal_the_twins(layer, heads, stride):
    fast, chain = _head_chain(layer, heads)
    assert [n for n, _ in chain.named_parameters()] == [n for n, _ in fast.named_parameters()]
    names, mask = heads_param_mask(fast, [(layer, h) for h in heads])
    tokens = torch.randint(0, CFG.d_vocab, (6, 24), generator=torch.Generator().manual_seed(3))
    out = []
    for model in (fast, chain):
        f, p = module_loss_fn(model, partial(lm_fast_loss, stride=stride))
        x = {k: v.clone().requires_grad_(k in names) for k, v in p.items()}
        loss = f(x, tokens)
        out.append((loss, torch.autograd.grad(loss, [x[n] for n in names])))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-6, atol=1e-6)
    for n, g_fast, g_chain in zip(names, out[0][1], out[1][1]):
        assert g_fast[mask[n]].abs().max() > 0
        torch.testing.assert_close(g_chain[mask[n]], g_fast[mask[n]], rtol=1e-5, atol=1e-6)


def test_head_chain_reuses_its_prefix_only_while_batch_and_frozen_weights_are_unchanged(monkeypatch):
    fast, chain = _head_chain(1, (2,))
    computed = []
    real = chain._compute_prefix
    monkeypatch.setattr(chain, "_compute_prefix", lambda *a: computed.append(1) or real(*a))
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, CFG.d_vocab, (3, 24), generator=g)
    p = {k: v.detach().clone() for k, v in fast.named_parameters()}

    def both(params, toks):
        from torch.func import functional_call
        return functional_call(fast, params, (toks,)), functional_call(chain, params, (toks,))

    ref, got = both(p, tokens)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    moved = dict(p, **{"blocks.1.attn.W_Q": p["blocks.1.attn.W_Q"].clone()})
    moved["blocks.1.attn.W_Q"][2] += 0.3  # the free head moves: the prefix is reused
    ref, got = both(moved, tokens.clone())  # an equal batch in another tensor
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert len(computed) == 1
    # a frozen head's slice, an upstream weight, the batch: each changes the function, and the prefix
    for change in ("other head", "layer 0", "tokens"):
        q = {k: v.clone() for k, v in moved.items()}
        toks = tokens
        if change == "other head":
            q["blocks.1.attn.W_V"][1] += 0.3
        elif change == "layer 0":
            q["blocks.0.attn.W_K"] += 0.3
        else:
            toks = torch.randint(0, CFG.d_vocab, (3, 24), generator=g)
        ref, got = both(q, toks)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert len(computed) == 4


def test_head_chain_falls_back_to_the_whole_forward_for_upstream_gradients_and_under_vmap():
    fast, chain = _head_chain(1, (0,))
    tokens = torch.randint(0, CFG.d_vocab, (4, 24), generator=torch.Generator().manual_seed(5))
    grads = []
    for model in (fast, chain):
        f, p = module_loss_fn(model, lm_fast_loss)
        x = {k: v.clone().requires_grad_(k == "embed.W_E") for k, v in p.items()}
        grads.append(torch.autograd.grad(f(x, tokens), [x["embed.W_E"]])[0])
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    from torch.func import functional_call, vmap
    p = {k: v.detach() for k, v in fast.named_parameters()}
    stacked = {k: torch.stack([v, v]) for k, v in p.items()}
    out = vmap(lambda q: functional_call(chain, q, (tokens,)))(stacked)
    torch.testing.assert_close(out[1], fast(tokens), rtol=1e-4, atol=1e-4)


def test_head_chain_bad_arguments_are_named():
    with pytest.raises(ValueError, match="layer must be an integer in \\[0, 1\\]"):
        HeadChainLM(CFG, 2, (0,))
    with pytest.raises(ValueError, match="heads must be distinct head indices in \\[0, 3\\]"):
        HeadChainLM(CFG, 0, (0, 4))
    with pytest.raises(ValueError, match="heads must be distinct"):
        HeadChainLM(CFG, 0, ())


def test_attention_runs_in_fp32_under_cpu_bf16_autocast():
    """Under the SGLD's bf16 autocast on a CPU the attention itself runs in fp32 (faster there, and
    closer to the fp32 model): the same output as F.scaled_dot_product_attention on the bf16 inputs
    upcast, not as the bf16 kernel."""
    import torch.nn.functional as F

    from stagewise.models.language_fast import _attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 8, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _attention(q, k, v, is_causal=True)
    assert out.dtype == torch.float32
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # outside autocast: the plain kernel in the inputs' dtype
    assert _attention(q.float(), k.float(), v.float(), is_causal=True).dtype == torch.float32
    assert _attention(q, k, v, is_causal=True).dtype == torch.bfloat16
