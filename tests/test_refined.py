import pandas as pd
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


# ------------------------------------------------------------------------------------------------
# Frozen weights stay bit-identical *during* sampling (not just in the model object)

def test_every_weight_outside_the_head_is_bit_identical_in_every_sgld_forward(tiny_lm):
    from stagewise.llc import estimate_llc
    from stagewise.llc.module import module_loss_fn

    names, masks = head_param_mask(tiny_lm, 1, 2)
    loss_fn, params = module_loss_fn(tiny_lm, lm_forward_loss)
    w_star = {n: p.detach().clone() for n, p in params.items()}
    seen = []

    def recording_loss(p, batch):  # sees the full weight dict of every SGLD forward pass
        seen.append({n: t.detach().clone() for n, t in p.items()})
        return loss_fn(p, batch)

    tokens = torch.randint(0, 5000, (16, 16))
    cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=10.0, num_chains=2, num_draws=4, num_burnin=1, batch_size=4, seed=0)
    estimate_llc(recording_loss, params, cfg, (tokens,), params_to_sample=names, param_mask=masks, progress=False)
    moved = 0
    for p in seen:
        for n, t in p.items():
            if n in masks:
                assert torch.equal(t[~masks[n]], w_star[n][~masks[n]]), n  # other heads' slices
                moved += int((t[masks[n]] != w_star[n][masks[n]]).sum())
            else:
                assert torch.equal(t, w_star[n]), n  # embeddings, LayerNorms, b_O, layer 0, ...
    assert len(seen) > 10 and moved > 0  # the head itself does move


def test_heads_param_mask_is_the_union_of_single_heads(tiny_lm):
    from stagewise.refined import heads_param_mask, parse_head

    names, masks = heads_param_mask(tiny_lm, ["1:2", (1, 3)])
    _, a = head_param_mask(tiny_lm, 1, 2)
    _, b = head_param_mask(tiny_lm, 1, 3)
    assert all(torch.equal(masks[n], a[n] | b[n]) for n in names)
    both_layers, _ = heads_param_mask(tiny_lm, ["0:0", "1:0"])
    assert len(both_layers) == 2 * len(names)
    assert parse_head("1:3", 2, 4) == (1, 3)
    with pytest.raises(ValueError, match="layer:head"):
        parse_head("13", 2, 4)
    with pytest.raises(ValueError, match="head index"):
        parse_head("1:4", 2, 4)


# ------------------------------------------------------------------------------------------------
# head_llc_sweep / data_llc_sweep

import functools  # noqa: E402

import numpy as np  # noqa: E402

from stagewise.refined import data_llc_sweep, head_llc_sweep  # noqa: E402

SWEEP_MODEL = functools.partial(make_language_model, LanguageModelConfig(n_layers=2, n_ctx=12, d_model=32, n_heads=4,
                                                                         d_vocab=64))
SWEEP_CFG = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=10.0, num_chains=2, num_draws=6, num_burnin=0, batch_size=4,
                       seed=0)


def _sweep_checkpoints():
    out = []
    for step in (0, 50):
        torch.manual_seed(step)
        out.append((step, {k: v.clone() for k, v in SWEEP_MODEL().state_dict().items()}))
    return out


def _sweep_data():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 64, (24, 12), generator=g)
    code = torch.randint(0, 8, (24, 12), generator=g)  # another distribution: a few tokens only
    return {"train": (train,), "code": (code,)}


def test_head_sweep_matches_direct_estimates_and_is_cached_per_head(tmp_cache, monkeypatch):
    cks, data = _sweep_checkpoints(), _sweep_data()
    frame = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:1", "1:3", ("1:0", "1:3")],
                           progress=False)
    assert len(frame) == 3 * 2 * 2  # heads x data sets x checkpoints
    assert set(frame["head"]) == {"0:1", "1:3", "1:0+1:3"}
    assert set(frame["data"]) == {"train", "code"} and set(frame["step"]) == {0, 50}
    assert {"llc_mean", "llc_std", "llc_sem", "loss_init", "flags", "layer"} <= set(frame.columns)
    assert frame.set_index("head").loc["1:0+1:3", "layer"].tolist() == [1, 1, 1, 1]

    # one entry against a direct wdrLLC estimate at that checkpoint
    model = SWEEP_MODEL()
    model.load_state_dict(cks[1][1])
    names, mask = head_param_mask(model.eval(), 1, 3)
    direct = estimate_llc_module(model, lm_forward_loss, data["code"], SWEEP_CFG, params_to_sample=names,
                                 param_mask=mask, progress=False)
    row = frame[(frame["head"] == "1:3") & (frame.data == "code") & (frame.step == 50)].iloc[0]
    assert row.llc_mean == direct.llc_mean and row.loss_init == direct.loss_init
    assert [row.llc_chain_0, row.llc_chain_1] == direct.llc_per_chain.tolist()  # per chain, for chain_split_clusters
    other = frame[(frame["head"] == "1:3") & (frame.data == "train") & (frame.step == 50)].iloc[0]
    assert other.loss_init != row.loss_init  # the data refinement really changes the data

    # cached per (checkpoint, head, data): 3 x 2 x 2 files; a re-run computes nothing,
    # and adding a head computes only that head's estimates
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 12
    import stagewise.llc.sweep as sw

    calls = []
    real = sw._run_checkpoint
    monkeypatch.setattr(sw, "_run_checkpoint", lambda payload: calls.append(1) or real(payload))
    again = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:1", "1:3", ("1:0", "1:3")],
                           progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(again, frame)
    head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:1", "0:2"], progress=False)
    assert len(calls) == 4  # 0:2 on two data sets at two checkpoints


def test_head_sweep_on_an_executor_equals_serial(tmp_cache):
    import concurrent.futures as cf

    cks, data = _sweep_checkpoints(), {"train": _sweep_data()["train"]}
    serial = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0", "1:1"], cache=False,
                            progress=False)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        pooled = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0", "1:1"], cache=False,
                                executor=pool, progress=False)
    pd.testing.assert_frame_equal(pooled, serial)


@pytest.mark.slow
def test_head_sweep_in_worker_processes_equals_serial(tmp_cache):
    cks, data = _sweep_checkpoints(), {"train": _sweep_data()["train"]}
    serial = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0", "1:1"], cache=False,
                            progress=False)
    procs = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0", "1:1"],
                           executor="processes", max_workers=2, progress=False)
    np.testing.assert_allclose(procs.llc_mean, serial.llc_mean, rtol=1e-5)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 4  # the caller cached the workers' results


def test_data_sweep_gives_one_curve_per_data_set(tmp_cache):
    cks, data = _sweep_checkpoints(), _sweep_data()
    frame = data_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, progress=False)
    assert len(frame) == 4 and set(frame["head"]) == {"all"}
    model = SWEEP_MODEL()
    model.load_state_dict(cks[0][1])
    direct = estimate_llc_module(model.eval(), lm_forward_loss, data["train"], SWEEP_CFG, progress=False)
    row = frame[(frame.data == "train") & (frame.step == 0)].iloc[0]
    assert row.llc_mean == direct.llc_mean
    assert (frame.num_sampled == sum(p.numel() for p in model.parameters())).all()


def test_refined_sweeps_loop_over_chains_by_default_on_every_device(tmp_cache, monkeypatch):
    """The sampler's chain_mode='auto' vmaps chains on CUDA; at the paper's LM shapes that needs
    130-650 GB (stagewise.plan, calibrated on an H200), so both refined sweeps ask for 'loop'."""
    import stagewise.llc.sweep as sw

    seen = []
    real = sw._run_checkpoint
    monkeypatch.setattr(sw, "_run_checkpoint", lambda payload: seen.append(payload["chain_mode"]) or real(payload))
    cks, data = _sweep_checkpoints()[:1], {"train": _sweep_data()["train"]}
    head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0"], cache=False, progress=False)
    data_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, cache=False, progress=False)
    assert seen == ["loop", "loop"]


def test_sweep_bad_arguments(tmp_cache):
    cks, data = _sweep_checkpoints(), _sweep_data()
    with pytest.raises(ValueError, match="listed twice"):
        head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:1", (0, 1)], progress=False)
    with pytest.raises(ValueError, match="layer"):
        head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["2:0"], progress=False)
    with pytest.raises(ValueError, match="executor"):
        head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:1"], executor="threads",
                       progress=False)


def test_weights_digest_is_the_llc_caches_and_handles_scalar_buffers(tiny_lm):
    from stagewise.llc.sweep import _tensor_digest
    from stagewise.refined import _weights_digest

    state = tiny_lm.state_dict()
    assert any(t.dim() == 0 for t in state.values())  # TransformerLens' attn.IGNORE
    non_scalar = {k: v for k, v in state.items() if v.dim() > 0}
    assert _weights_digest(non_scalar) == _tensor_digest(non_scalar)  # same key as estimate_llc_sweep's
    changed = dict(state)
    changed["blocks.0.attn.IGNORE"] = torch.tensor(-1e4)
    assert _weights_digest(changed) != _weights_digest(state)


def test_head_chains_give_the_twins_estimates_and_their_own_cache_entries(tmp_cache):
    """The plain-torch twin's per-head chains run through HeadChainLM (prefix once per batch): the
    same estimates as the whole twin to float rounding, cached apart from them."""
    from stagewise.models.language_fast import FastAttentionOnlyLM, HeadChainLM, make_fast_language_model
    from stagewise.models.language_fast import lm_fast_loss
    from stagewise.refined import head_chain_model_fn

    cfg = LanguageModelConfig(n_layers=2, n_ctx=12, d_model=32, n_heads=4, d_vocab=64)
    fast_fn = functools.partial(make_fast_language_model, cfg)
    cks, data = _sweep_checkpoints(), _sweep_data()
    heads = ["0:1", "1:3", ("1:0", "1:2")]
    whole = head_llc_sweep(cks, fast_fn, lm_fast_loss, data, SWEEP_CFG, heads=heads, head_chains=False, progress=False)
    chains = head_llc_sweep(cks, fast_fn, lm_fast_loss, data, SWEEP_CFG, heads=heads, progress=False)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2 * len(whole)
    np.testing.assert_allclose(chains.llc_mean, whole.llc_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chains.loss_init, whole.loss_init, rtol=1e-6)
    assert (whole.llc_mean.abs() > 1e-3).all()

    assert isinstance(head_chain_model_fn(fast_fn, [(1, 3)])(), HeadChainLM)
    assert head_chain_model_fn(fast_fn, [(0, 1), (1, 3)]) is fast_fn  # two layers: the whole twin
    assert head_chain_model_fn(SWEEP_MODEL, [(1, 3)]) is SWEEP_MODEL  # a HookedTransformer as it is
    assert type(fast_fn()) is FastAttentionOnlyLM


def test_serial_head_sweep_takes_estimates_another_process_wrote_meanwhile(tmp_cache, monkeypatch):
    """Two processes on one sweep (one per core) share it: before each estimate the cache is read again."""
    import stagewise.llc.sweep as sw

    cks, data = _sweep_checkpoints(), {"train": _sweep_data()["train"]}
    first = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0"], progress=False)
    files = sorted(tmp_cache.glob("llc/*/result.pt"))
    assert len(files) == 2
    written = {f: f.read_bytes() for f in files}
    for f in files:
        f.unlink()
    calls = []
    real = sw._run_checkpoint

    def other_process_finishes_everything(payload):
        calls.append(1)
        for f, content in written.items():
            f.write_bytes(content)
        return real(payload)

    monkeypatch.setattr(sw, "_run_checkpoint", other_process_finishes_everything)
    again = head_llc_sweep(cks, SWEEP_MODEL, lm_forward_loss, data, SWEEP_CFG, heads=["0:0"], progress=False)
    assert len(calls) == 1  # the second estimate was read, not computed
    pd.testing.assert_frame_equal(again, first)
