"""Checkpoint sweeps: caching, resumption, process and Dask execution, calibration grid + plot."""

import functools

import numpy as np
import pytest
import torch

from stagewise.data.regression import RegressionTask, regression_loss, sample_batch
from stagewise.llc import SGLDConfig, calibrate_sgld, estimate_llc_module, estimate_llc_sweep, plot_llc_traces
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig

# Top-level (picklable) pieces: a model factory and the library's regression loss.
MODEL_FN = functools.partial(RegressionTransformer, RegressionTransformerConfig(n_layers=1, n_heads=2, d_embed=8, d_mlp=8))
CFG = SGLDConfig(epsilon=1e-4, gamma=100.0, num_chains=2, num_draws=12, num_burnin=3, batch_size=32, seed=0)


def _checkpoints(n=3):
    out = []
    for step in range(n):
        torch.manual_seed(step)
        out.append((step * 10, {k: v.clone() for k, v in MODEL_FN().state_dict().items()}))
    return out


def _data():
    b = sample_batch(RegressionTask(), 96, torch.Generator().manual_seed(1))
    return b.tokens, b.ys


def test_sweep_matches_single_estimates_and_is_cached(tmp_cache, monkeypatch):
    cks, data = _checkpoints(), _data()
    sweep = estimate_llc_sweep(cks, MODEL_FN, regression_loss, data, CFG, progress=False)
    assert list(sweep.steps) == [0, 10, 20]
    for (step, state), r in zip(cks, sweep.results):
        model = MODEL_FN()
        model.load_state_dict(state)
        direct = estimate_llc_module(model.eval(), regression_loss, data, CFG, progress=False)
        np.testing.assert_array_equal(direct.loss_trace, r.loss_trace)

    # resumable: drop one cached result, and make any recomputation other than that one fail
    files = sorted(tmp_cache.glob("llc/*/result.pt"))
    assert len(files) == 3
    files[1].unlink()
    import stagewise.llc.sweep as sw

    calls = []
    real = sw._run_checkpoint
    monkeypatch.setattr(sw, "_run_checkpoint", lambda payload: calls.append(1) or real(payload))
    again = estimate_llc_sweep(cks, MODEL_FN, regression_loss, data, CFG, progress=False)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.llc_mean, sweep.llc_mean)
    assert set(sweep.to_frame().columns) >= {"step", "llc_mean", "llc_std", "flags"}


def test_sweep_rejects_lambdas(tmp_cache):
    with pytest.raises(TypeError, match="top-level"):
        estimate_llc_sweep(_checkpoints(1), lambda: MODEL_FN(), regression_loss, _data(), CFG, progress=False)


@pytest.mark.slow
def test_sweep_in_processes_and_on_dask_cluster_equal_serial(tmp_cache):
    cks, data = _checkpoints(2), _data()
    serial = estimate_llc_sweep(cks, MODEL_FN, regression_loss, data, CFG, cache=False, progress=False)
    procs = estimate_llc_sweep(cks, MODEL_FN, regression_loss, data, CFG, cache=False, executor="processes",
                               max_workers=2, progress=False)
    np.testing.assert_allclose(procs.llc_mean, serial.llc_mean, rtol=1e-5)

    from distributed import Client, LocalCluster

    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = estimate_llc_sweep(cks, MODEL_FN, regression_loss, data, CFG, executor=client, progress=False)
    np.testing.assert_allclose(dask.llc_mean, serial.llc_mean, rtol=1e-5)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2  # the caller cached the cluster's results


def test_calibration_grid_and_trace_plot(tmp_cache):
    cal = calibrate_sgld(_checkpoints(2), MODEL_FN, regression_loss, _data(), CFG, epsilons=[1e-5, 1e-4],
                         gammas=[10.0, 100.0], progress=False)
    df = cal.to_frame()
    assert len(df) == 2 * 2 * 2 and set(df["epsilon"]) == {1e-5, 1e-4}
    fig = plot_llc_traces(cal)
    assert len(fig.axes) == 4


def test_weight_digest_handles_scalar_buffers():
    """TransformerLens keeps a 0-d ``IGNORE`` buffer in every attention layer: the cache key must
    hash it (a plain ``view(uint8)`` refuses 0-d tensors) and still tell different values apart."""
    from stagewise.llc.sweep import _tensor_digest

    a = _tensor_digest({"w": torch.ones(3), "ignore": torch.tensor(-1e5)})
    b = _tensor_digest({"w": torch.ones(3), "ignore": torch.tensor(-1e4)})
    assert a != b
    assert a == _tensor_digest({"w": torch.ones(3), "ignore": torch.tensor(-1e5)})


def test_compute_dtype_is_part_of_the_key_only_when_not_exact(tmp_cache):
    """fp32 keys keep their pre-existing form (old cached results stay valid); a bf16 estimate is
    cached apart and is never served for an fp32 request."""
    from stagewise.data.regression import regression_forward_loss
    from stagewise.llc import sweep_cache_key

    data = _data()
    exact = sweep_cache_key(CFG, MODEL_FN, regression_forward_loss, data)
    assert "compute_dtype" not in exact
    assert sweep_cache_key(CFG, MODEL_FN, regression_forward_loss, data, compute_dtype="bfloat16") == {
        **exact, "compute_dtype": "bfloat16"}
    cks = _checkpoints(1)
    fp32 = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, progress=False)
    bf16 = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, compute_dtype="bfloat16",
                              progress=False)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2
    assert fp32.results[0].compute_dtype is None and bf16.results[0].compute_dtype == "bfloat16"
    assert not np.array_equal(fp32.results[0].loss_trace, bf16.results[0].loss_trace)
    # 'auto' resolves to a concrete dtype before keying: on a machine without bf16 instructions it
    # is the fp32 entry (served from the cache, not recomputed)
    from stagewise.llc import resolve_compute_dtype

    auto = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, compute_dtype="auto", progress=False)
    expected = bf16 if resolve_compute_dtype("auto") == "bfloat16" else fp32
    np.testing.assert_array_equal(auto.results[0].loss_trace, expected.results[0].loss_trace)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2


def test_loss_path_is_part_of_the_key_and_changes_no_science(tmp_cache):
    """The predictions-only loss is another function (another key) computing the same λ̂."""
    from stagewise.data.regression import regression_forward_loss, regression_prediction_loss

    cks, data = _checkpoints(1), _data()
    full = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, progress=False)
    fast = estimate_llc_sweep(cks, MODEL_FN, regression_prediction_loss, data, CFG, progress=False)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2
    np.testing.assert_allclose(fast.results[0].loss_trace, full.results[0].loss_trace, rtol=1e-4)
    assert abs(fast.llc_mean[0] - full.llc_mean[0]) < 0.02 * abs(full.llc_mean[0]) + 1e-3


def test_compare_sweeps_counts_checkpoints_within_their_standard_errors():
    from stagewise.llc import LLCSweep, compare_sweeps

    def sweep(means, sems):
        results = []
        for m, s in zip(means, sems):
            per_chain = np.array([m - s, m + s])  # std (ddof 1) = s·sqrt(2), sem = s
            results.append(_result(per_chain))
        return LLCSweep(np.array([10, 20, 30]), results)

    a = sweep([10.0, 20.0, 30.0], [1.0, 1.0, 1.0])
    b = sweep([11.0, 20.0, 36.0], [1.0, 1.0, 1.0])  # z = -0.71, 0, -4.2
    table, summary = compare_sweeps(a, b)
    np.testing.assert_allclose(table.z.to_numpy(), [-1 / np.sqrt(2), 0.0, -6 / np.sqrt(2)])
    assert summary["within"] == 2 and summary["comparable"] == 3 and not summary["all_within"]
    assert compare_sweeps(a, a)[1]["all_within"]
    with pytest.raises(ValueError, match="no checkpoint"):
        compare_sweeps(a, LLCSweep(np.array([5]), [a.results[0]]))


def _result(per_chain):
    from stagewise.llc import LLCResult

    n = len(per_chain)
    return LLCResult(llc_mean=float(per_chain.mean()), llc_std=float(per_chain.std(ddof=1)), llc_per_chain=per_chain,
                     loss_trace=np.zeros((n, 1)), llc_trace=np.zeros((n, 1)), loss_init=0.0, loss_init_trace=np.zeros(1),
                     burnin_loss_trace=np.zeros((n, 0)), diagnostics={}, excluded_chains=[], nbeta=1.0, num_sampled=1,
                     config=CFG)


def test_cuda_graph_none_resolves_to_where_it_applies():
    from stagewise.llc.sweep import _resolve_cuda_graph

    assert _resolve_cuda_graph(None, "cuda", "auto", False) and _resolve_cuda_graph(None, "cuda:1", "vmap", False)
    assert not _resolve_cuda_graph(None, "cpu", "auto", False) and not _resolve_cuda_graph(None, None, "vmap", False)
    assert not _resolve_cuda_graph(None, "cuda", "loop", False) and not _resolve_cuda_graph(None, "cuda", "auto", True)
    assert _resolve_cuda_graph(True, "cpu", "loop", False) is True  # explicit: estimate_llc then says why not
    assert _resolve_cuda_graph(False, "cuda", "vmap", False) is False


def test_bf16_keys_name_the_models_numerics_revision_fp32_keys_do_not():
    """The plain-torch LM's bf16 numerics changed (attention in fp32 under autocast): its bf16
    estimates get a new key, its fp32 ones keep theirs, and a model without a revision is unchanged."""
    from functools import partial

    from stagewise.llc.sweep import sweep_cache_key
    from stagewise.models.language import LanguageModelConfig
    from stagewise.models.language_fast import lm_fast_loss, make_fast_language_model
    from stagewise.models.regression import RegressionTransformer

    cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=20.0, num_chains=1, num_draws=4)
    lm = partial(make_fast_language_model, LanguageModelConfig(n_layers=1, n_ctx=8, d_model=8, n_heads=2, d_vocab=10))
    assert sweep_cache_key(cfg, lm, lm_fast_loss, None, compute_dtype="bfloat16")["bf16_numerics"] == 2
    assert "bf16_numerics" not in sweep_cache_key(cfg, lm, lm_fast_loss, None, compute_dtype=None)
    assert "bf16_numerics" not in sweep_cache_key(cfg, RegressionTransformer, lm_fast_loss, None,
                                                  compute_dtype="bfloat16")
