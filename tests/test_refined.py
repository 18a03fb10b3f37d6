import pytest
import torch

from stagewise.llc import SGLDConfig, estimate_llc_module
from stagewise.models.language import LanguageModelConfig, lm_forward_loss, make_language_model
from stagewise.refined import head_labels, head_param_mask


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    return make_language_model(LanguageModelConfig(n_layers=2, n_ctx=16, d_model=32, n_heads=4)).eval()


def test_mask_selects_exactly_one_heads_slices(tiny_lm):
    names, masks = head_param_mask(tiny_lm, 1, 2)
    assert set(names) == {f"blocks.1.attn.{p}" for p in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
    params = dict(tiny_lm.named_parameters())
    total = sum(int(m.sum()) for m in masks.values())
    d, dh = 32, 8
    assert total == 4 * d * dh + 3 * dh  # Q, K, V, O matrices plus three bias vectors of one head
    assert masks["blocks.1.attn.W_Q"][2].all() and not masks["blocks.1.attn.W_Q"][[0, 1, 3]].any()
    assert all(masks[n].shape == params[n].shape for n in names)


def test_head_refined_llc_runs_and_leaves_the_model_untouched(tiny_lm):
    names, masks = head_param_mask(tiny_lm, 0, 3)
    tokens = torch.randint(0, 5000, (32, 16))
    before = {n: p.detach().clone() for n, p in tiny_lm.named_parameters()}

    cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, num_chains=1, num_draws=5, num_burnin=0, batch_size=4, seed=0)
    r = estimate_llc_module(tiny_lm, lm_forward_loss, (tokens,), cfg, params_to_sample=names, param_mask=masks, progress=False)
    assert r.loss_trace.shape == (1, 5)
    for n, p in tiny_lm.named_parameters():  # the model itself is never modified
        assert torch.equal(p, before[n])


def test_bad_head_indices(tiny_lm):
    with pytest.raises(ValueError, match="layer"):
        head_param_mask(tiny_lm, 2, 0)
    with pytest.raises(ValueError, match="head"):
        head_param_mask(tiny_lm, 0, 4)
    assert head_labels(2, 2) == ["0:0", "0:1", "1:0", "1:1"]
