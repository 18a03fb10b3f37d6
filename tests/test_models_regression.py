import pytest
import torch
from torch.func import functional_call

from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig, count_parameters


def test_paper_model_has_exactly_51717_parameters():
    assert count_parameters(RegressionTransformer(RegressionTransformerConfig())) == 51_717


def test_parameter_count_scales_as_expected_with_width():
    # token emb D+1->d (no bias), pos 2K*d, per block: qkv 3d², out d², 2 LN 4d, MLP 2*d*d_mlp + d_mlp + d,
    # final LN 2d, unembedding d*(D+1) + D+1.
    D, K, d, m, L = 3, 5, 16, 24, 3
    cfg = RegressionTransformerConfig(task_size=D, max_examples=K, n_layers=L, n_heads=2, d_embed=d, d_mlp=m)
    per_block = 3 * d * d + d * d + 4 * d + 2 * d * m + m + d
    expected = (D + 1) * d + 2 * K * d + L * per_block + 2 * d + d * (D + 1) + D + 1
    assert count_parameters(RegressionTransformer(cfg)) == expected


def test_model_is_causal():
    torch.manual_seed(0)
    model = RegressionTransformer()
    x = torch.randn(2, 16, 5)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(2, 7, 5)
    out, out2 = model(x), model(x2)
    assert torch.allclose(out[:, :9], out2[:, :9], atol=1e-6)
    assert not torch.allclose(out[:, 9:], out2[:, 9:], atol=1e-3)


def test_attention_patterns_are_causal_distributions():
    model = RegressionTransformer()
    pats = model.attention_patterns(torch.randn(3, 16, 5))
    assert pats.shape == (3, 2, 4, 16, 16)
    assert torch.allclose(pats.sum(-1), torch.ones(3, 2, 4, 16), atol=1e-5)
    assert torch.all(pats.triu(1) == 0)


def test_functional_call_matches_module_and_vmaps_over_parameter_sets():
    model = RegressionTransformer()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(4, 16, 5)
    assert torch.allclose(functional_call(model, params, (x,)), model(x), atol=1e-6)
    stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
    outs = torch.func.vmap(lambda p: functional_call(model, p, (x,)))(stacked)
    assert torch.allclose(outs[0], model(x), atol=1e-5)
    assert not torch.allclose(outs[1], outs[0])


@pytest.mark.parametrize("field,value", [("task_size", 0), ("n_layers", -1), ("d_embed", 0), ("max_examples", 0)])
def test_bad_sizes_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RegressionTransformerConfig(**{field: value})


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="n_heads"):
        RegressionTransformerConfig(n_heads=5)


def test_wrong_token_dimension_or_length_is_a_clear_error():
    model = RegressionTransformer()
    with pytest.raises(ValueError, match="D\\+1 = 5"):
        model(torch.randn(2, 16, 4))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model(torch.randn(2, 18, 5))


@pytest.mark.parametrize("length", [16, 15, 8, 1])
def test_predictions_only_equals_the_full_forward_read_at_x_positions(length):
    """The fast path (last block at x positions only, unembedding component 0) is the same function:
    values and parameter gradients of the regression loss match the full forward's."""
    torch.manual_seed(0)
    model = RegressionTransformer()
    with torch.no_grad():  # move off the init so every weight (LN gains, biases) matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randn(6, length, 5)
    ys = torch.randn(6, (length + 1) // 2)
    full = model(tokens)[:, ::2, 0]
    fast = model(tokens, predictions_only=True)
    assert fast.shape == full.shape == ys.shape
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.predict(tokens), fast)
    grads = []
    for out in (lambda: model(tokens)[:, ::2, 0], lambda: model(tokens, predictions_only=True)):
        model.zero_grad()
        ((out() - ys) ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
    assert count_parameters(model) == 51_717


# --- the residual stream: "standard" (the paper's text) and "paper_code" (the authors' doubled stream)

def _equations(model: RegressionTransformer, tokens: torch.Tensor, residual: str) -> torch.Tensor:
    """The forward written straight from the module docstring's equations, with the model's weights."""
    import torch.nn.functional as F

    x = tokens @ model.token_embedding.weight.T + model.pos_embedding[: tokens.shape[1]]
    for blk in model.blocks:
        def ln(m, v):
            return F.layer_norm(v, (v.shape[-1],), m.weight, m.bias, m.eps)

        a = blk.attn(ln(blk.ln_attn, x))
        m = blk.mlp(ln(blk.ln_mlp, x + a))
        x = (2 * x + a + m) if residual == "paper_code" else (x + a + m)
    return model.unembedding(ln(model.ln_final, x))


@pytest.mark.parametrize("residual", ["standard", "paper_code"])
def test_each_residual_is_the_forward_its_equations_give(residual):
    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig(residual=residual))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randn(5, 16, 5)
    torch.testing.assert_close(model(tokens), _equations(model, tokens, residual), rtol=1e-5, atol=1e-5)


def test_the_two_residuals_share_parameters_and_init_and_differ_only_in_the_forward():
    torch.manual_seed(3)
    standard = RegressionTransformer(RegressionTransformerConfig())
    torch.manual_seed(3)
    doubled = RegressionTransformer(RegressionTransformerConfig(residual="paper_code"))
    a, b = standard.state_dict(), doubled.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert count_parameters(doubled) == 51_717
    tokens = torch.randn(4, 16, 5)
    # the doubled stream carries the embeddings with weight 4 after two blocks: not the same function
    assert not torch.allclose(standard(tokens), doubled(tokens), atol=1e-3)
    # and it is that function: the stream before the final LN is 4e + 2·block-1 output + block-2 output
    streams = doubled.residual_stream(tokens)
    assert len(streams) == 3
    torch.testing.assert_close(_equations(doubled, tokens, "paper_code"), doubled(tokens), rtol=1e-5, atol=1e-5)


def test_standard_residual_is_bit_for_bit_the_pre_option_block():
    """The default keeps today's numbers: the block as it was written before the option, op for op."""
    torch.manual_seed(1)
    model = RegressionTransformer()
    tokens = torch.randn(3, 16, 5)
    x = model.token_embedding(tokens) + model.pos_embedding[:16]
    for blk in model.blocks:
        x = x + blk.attn(blk.ln_attn(x))
        x = x + blk.mlp(blk.ln_mlp(x))
    assert torch.equal(model(tokens), model.unembedding(model.ln_final(x)))


def test_standard_residual_leaves_cache_keys_unchanged():
    from stagewise.cache import config_hash, config_to_dict

    assert "residual" not in config_to_dict(RegressionTransformerConfig())
    assert config_to_dict(RegressionTransformerConfig(residual="paper_code"))["residual"] == "paper_code"
    assert config_hash(RegressionTransformerConfig()) != config_hash(RegressionTransformerConfig(residual="paper_code"))


def test_the_shipped_long_run_is_still_found_under_the_standard_key():
    from stagewise.profiles.regression import PROFILES
    from stagewise.runs import _regression_key
    from stagewise.shipped import find_manifest

    assert find_manifest("regression_runs", _regression_key(PROFILES["long"], 0)) is not None


def test_only_the_authors_residual_is_named_as_a_non_paper_setting():
    assert RegressionTransformerConfig().setting is None  # the paper's text
    assert RegressionTransformerConfig(residual="paper_code").setting == "residual=paper_code"


def test_unknown_residual_is_a_clear_error():
    with pytest.raises(ValueError, match="residual must be one of 'standard', 'paper_code'"):
        RegressionTransformerConfig(residual="doubled")


@pytest.mark.parametrize("length", [16, 15, 1])
def test_paper_code_predictions_only_path_and_vmapped_chains_match_the_full_forward(length):
    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig(residual="paper_code"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randn(6, length, 5)
    torch.testing.assert_close(model(tokens, predictions_only=True), model(tokens)[:, ::2, 0], rtol=1e-5, atol=1e-5)
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v]) for k, v in params.items()}
    outs = torch.func.vmap(lambda p: functional_call(model, p, (tokens,), {"predictions_only": True}))(stacked)
    torch.testing.assert_close(outs[0], model(tokens, predictions_only=True), rtol=1e-5, atol=1e-5)
