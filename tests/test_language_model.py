"""Attention-only language models (App. D.1.1) and the language profiles."""

import math

import pytest
import torch

from stagewise.models.language import (
    PAPER_PARAMETER_COUNTS,
    LanguageModelConfig,
    lm_loss,
    lm_loss_functional,
    make_language_model,
)
from stagewise.profiles import get_profile


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_language_model(LanguageModelConfig(n_layers=2, n_ctx=16, d_model=32, n_heads=4))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_paper_models_have_the_papers_parameter_counts(n_layers):
    model = make_language_model(LanguageModelConfig(n_layers=n_layers))
    assert n_params(model) == PAPER_PARAMETER_COUNTS[n_layers] == {1: 3_091_336, 2: 3_355_016}[n_layers]
    cfg = model.cfg
    assert cfg.attn_only and cfg.normalization_type == "LN" and cfg.positional_embedding_type == "shortformer"
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.n_ctx) == (256, 8, 32, 5000, 1024)


def test_shortformer_keeps_positions_out_of_the_residual_stream(tiny):
    tokens = torch.randint(0, 5000, (2, 16))
    _, cache = tiny.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.hook_resid_pre")
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], tiny.embed.W_E[tokens])


def test_initial_loss_is_near_uniform_and_functional_call_matches(tiny):
    torch.manual_seed(1)
    tokens = torch.randint(0, 5000, (4, 16))
    loss = lm_loss(tiny, (tokens,))
    assert abs(loss.item() - math.log(5000)) < 0.3
    params = {k: v.detach().clone() for k, v in tiny.named_parameters()}
    assert torch.equal(lm_loss_functional(tiny, params, (tokens,)), loss.detach())
    # a perturbed parameter set changes the functional loss but not the module
    params["unembed.b_U"] = params["unembed.b_U"] + torch.linspace(-3, 3, 5000)
    assert not torch.isclose(lm_loss_functional(tiny, params, tokens), loss)
    assert torch.equal(lm_loss(tiny, tokens), loss)


def test_vmap_over_parameter_sets_matches_a_loop(tiny):
    tokens = torch.randint(0, 5000, (3, 12))
    base = {k: v.detach() for k, v in tiny.named_parameters()}
    stacked = {k: torch.stack([v, v + 0.01 * torch.randn_like(v)]) for k, v in base.items()}
    batched = torch.func.vmap(lambda p: lm_loss_functional(tiny, p, tokens))(stacked)
    looped = torch.stack([lm_loss_functional(tiny, {k: v[i] for k, v in stacked.items()}, tokens) for i in range(2)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_a_few_adamw_steps_learn_a_small_vocabulary():
    model = make_language_model(LanguageModelConfig(n_layers=1, n_ctx=16, d_model=32, n_heads=4))
    tokens = torch.randint(0, 50, (8, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    first = lm_loss(model, tokens).item()
    for _ in range(30):
        loss = lm_loss(model, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 2.0  # a 50-token vocabulary is learnable from log(5000)


def test_bad_configs_and_inputs_raise_naming_the_parameter(tiny):
    with pytest.raises(ValueError, match="n_layers"):
        LanguageModelConfig(n_layers=0)
    with pytest.raises(ValueError, match="n_heads"):
        LanguageModelConfig(d_model=256, n_heads=7)
    with pytest.raises(ValueError, match="d_vocab"):
        lm_loss(tiny, torch.full((1, 8), 5000))
    with pytest.raises(ValueError, match="n_ctx"):
        lm_loss(tiny, torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        lm_loss(tiny, torch.zeros(8, dtype=torch.long))


def test_language_profiles():
    paper = get_profile("language", "paper")
    t = paper.train
    assert (paper.model.n_layers, paper.model.n_ctx, paper.model.d_model, paper.model.n_heads) == (2, 1024, 256, 8)
    assert (t.lr, t.optimizer, t.weight_decay, t.betas, t.schedule) == (1e-3, "adamw", 0.05, (0.9, 0.999), "constant")
    assert (t.num_steps, t.seed, t.checkpoint_every, paper.batch_size) == (50_000, 1, 10, 100)
    assert len(t.checkpoint_steps()) == 5001 and paper.corpus.source == "registry"
    assert get_profile("language", "smoke").corpus.source == "sample"
    with pytest.raises(ValueError, match="d_vocab"):
        get_profile("language", "cpu", model=LanguageModelConfig(d_vocab=4000))
    with pytest.raises(ValueError, match="batch_size"):
        get_profile("language", "cpu", batch_size=0)


def test_subsampled_loss_is_the_mean_over_its_positions_and_covers_every_position():
    """The SGLD loss with the unembedding at every ``stride``-th position equals the cross-entropy
    averaged over exactly those positions of the full logits, and ``stride`` rows tile each
    position once (so it is unbiased for the all-position loss)."""
    from torch.func import functional_call

    from stagewise.models.language import (lm_forward_loss, lm_forward_loss_subsampled, per_token_loss,
                                           subsampled_positions)

    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=2, n_ctx=17, d_model=32, n_heads=4)).eval()
    with torch.no_grad():
        model.pos_embed.W_pos.normal_()  # Shortformer positions must still reach the attention layers
    tokens = torch.randint(0, 5000, (8, 17))
    params = {n: p.detach() for n, p in model.named_parameters()}

    def forward(*args, **kwargs):
        return functional_call(model, params, args, kwargs)

    full = per_token_loss(model(tokens, return_type="logits"), tokens)  # [8, 16]
    pos = subsampled_positions(8, 17, 4)
    assert pos.shape == (8, 4)
    counts = torch.bincount(pos[:4].reshape(-1), minlength=16)
    assert torch.equal(counts, torch.ones(16, dtype=torch.long))  # 4 rows cover 16 positions once
    expected = torch.gather(full, 1, pos).mean()
    got = lm_forward_loss_subsampled(forward, (tokens,), stride=4)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(lm_forward_loss_subsampled(forward, (tokens,), stride=1), lm_forward_loss(forward, (tokens,)))
    # a gradient flows to the attention weights (they still see the whole context)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = lm_forward_loss_subsampled(lambda *a, **k: functional_call(model, p, a, k), (tokens,), stride=4)
    loss.backward()
    assert p["blocks.0.attn.W_Q"].grad.abs().sum() > 0 and p["pos_embed.W_pos"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="stride"):
        subsampled_positions(8, 17, 0)
    with pytest.raises(ValueError, match="stride"):
        subsampled_positions(8, 17, 17)
