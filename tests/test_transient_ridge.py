import concurrent.futures as cf
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from stagewise.data.regression import RegressionTask, task_set
from stagewise.models.regression import RegressionTransformerConfig
from stagewise.profiles import get_profile
from stagewise.profiles.ridge import TransientRidgeProfile, sqrt2_grid
from stagewise import transient_ridge as TR
from stagewise.ridge import dmmse_predict, ridge_predict


@pytest.fixture
def smoke():
    return get_profile("ridge", "smoke")


# ------------------------------------------------------------------------------------------------
# profiles and bad input


def test_sqrt2_grid_is_the_papers_grid():
    assert sqrt2_grid(362) == (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362)
    assert sqrt2_grid(64, min_m=8) == (8, 11, 16, 23, 32, 45, 64)
    with pytest.raises(ValueError, match="max_m"):
        sqrt2_grid(0)
    with pytest.raises(ValueError, match="min_m"):
        sqrt2_grid(8, min_m=9)


def test_profile_rejects_mismatched_d_k_and_bad_grids():
    with pytest.raises(ValueError, match="must agree on D and K"):
        TransientRidgeProfile(name="x", task=RegressionTask(task_size=3, max_examples=16))
    with pytest.raises(ValueError, match="must agree on D and K"):
        TransientRidgeProfile(name="x", task=RegressionTask(task_size=8, max_examples=8))
    with pytest.raises(ValueError, match="m_grid"):
        get_profile("ridge", "smoke", m_grid=(0, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        get_profile("ridge", "smoke", m_grid=(4, 2))
    with pytest.raises(ValueError, match="num_tasks"):
        get_profile("ridge", "smoke", task=RegressionTask(task_size=2, max_examples=4, num_tasks=3))


def test_paper_profile_is_the_papers_setting():
    from stagewise.models.regression import RegressionTransformer, count_parameters

    p = get_profile("ridge", "paper")
    assert (p.task.task_size, p.task.max_examples, p.task.noise_variance) == (8, 16, 0.125)
    assert p.m_grid[0] == 1 and p.m_grid[-1] == 2**15 and p.task_diversities[-1] is None
    assert p.pca_batch == 512
    assert abs(count_parameters(RegressionTransformer(p.model)) - 2.65e6) < 0.01e6  # "2.65 million"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_task_diversity_must_be_a_positive_integer_or_none(smoke, bad):
    with pytest.raises(ValueError, match="task diversity M"):
        TR.run_task(smoke, bad)
    assert TR.run_task(smoke, None).num_tasks is None
    assert TR.run_task(smoke, 3).num_tasks == 3


def test_ideal_predictions_reject_a_batch_of_another_d(smoke):
    other = get_profile("ridge", "smoke", task=RegressionTask(task_size=3, max_examples=4),
                        model=RegressionTransformerConfig(task_size=3, max_examples=4, n_layers=1, n_heads=2,
                                                          d_embed=8, d_mlp=8))
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        TR.ideal_predictions(smoke, 2, TR.ood_batch(other))


# ------------------------------------------------------------------------------------------------
# nested task sets and fixed test sets


def test_task_sets_are_nested_and_the_root_batch_is_drawn_from_t1(smoke):
    p = get_profile("ridge", "smoke", pca_batch=4000)
    t1 = task_set(TR.run_task(p, 1))
    assert torch.equal(task_set(TR.run_task(p, 4))[:1], t1)
    assert torch.equal(task_set(TR.run_task(p, 64))[:4], task_set(TR.run_task(p, 4)))
    b = TR.root_batch(p)
    assert torch.all(b.tasks == t1[0])
    resid = b.ys - b.xs @ t1[0]
    assert abs(resid.var().item() - p.task.noise_variance) < 0.01  # y = t_1ᵀx + N(0, σ²)


def test_dmmse_infinity_is_ridge_and_dmmse_1_is_the_root_task(smoke):
    b = TR.ood_batch(smoke)
    inf = TR.ideal_predictions(smoke, None, b)
    assert np.array_equal(inf["dmmse"], inf["ridge"])
    one = TR.ideal_predictions(smoke, 1, b)
    t1 = task_set(TR.run_task(smoke, 1))[0].double()
    np.testing.assert_allclose(one["dmmse"], (b.xs.double() @ t1).numpy(), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# analysis of curves (known answers)


def test_function_distance_and_critical_step():
    f = np.zeros((3, 2, 4))
    f[1] += 1.0
    f[2, 0] += 2.0
    np.testing.assert_allclose(TR.function_distance(f, np.zeros((2, 4))), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="share"):
        TR.function_distance(f, np.zeros((2, 3)))
    steps = np.array([0, 10, 20, 30, 40])
    assert TR.critical_step(steps, [5.0, 3.0, 1.0, 2.0, 4.0]) == 20
    # one noisy low point is smoothed away, the broad minimum wins
    assert TR.critical_step(np.arange(9), [5, 4, 0.5, 4, 3, 2, 2, 2, 3], smoothing=1.0) in (5, 6, 7)
    with pytest.raises(ValueError, match="NaN"):
        TR.critical_step(steps, [1, 2, np.nan, 3, 4])


def _curve(M, m, ood, dist_dmmse, dist_ridge, dmmse_ood=3.0, ridge_ood=1.0, zero_ood=5.0):
    n = len(ood)
    return pd.DataFrame({"M": M, "m": m, "step": np.arange(n) * 10, "ood_loss": ood, "in_loss": 1.0,
                         "dist_dmmse": dist_dmmse, "dist_ridge": dist_ridge, "dmmse_ood": dmmse_ood,
                         "ridge_ood": ridge_ood, "dmmse_in": 0.5, "ridge_in": 0.8, "zero_ood": zero_ood})


def test_transience_summary_classifies_known_curves():
    curves = pd.concat([
        # straight to dMMSE_M: the OOD loss falls from the zero predictor's 5 to dMMSE_M's 3, no further
        _curve("2", 2, [5, 4.5, 4, 3.5, 3], [3, 2, 1, 0.1, 0.0], [3, 2, 1, 0.8, 0.9]),
        # transient: down to ridge (1.0), back up to dMMSE_M (3.0)
        _curve("16", 16, [5, 3, 1, 2, 3], [3, 2, 1, 0.3, 0.0], [3, 2, 0, 0.5, 0.9]),
        # partial: 40% of the way to ridge, then back up by only 7% of the dMMSE_M-ridge gap
        _curve("8", 8, [5, 3, 2.2, 2.3, 2.34], [3, 2, 1, 0.3, 0.2], [3, 2, 1, 0.5, 0.6]),
        # straight to ridge and stays
        _curve("256", 256, [5, 3, 1.2, 1.1, 1.0], [3, 2, 1, 0.9, 0.9], [3, 2, 0.1, 0.0, 0.0], dmmse_ood=1.5),
        _curve("∞", math.inf, [5, 3, 1.2, 1.1, 1.0], [3, 2, 0.1, 0.0, 0.0], [3, 2, 0.1, 0.0, 0.0], dmmse_ood=1.0),
    ])
    s = TR.transience_summary(curves)
    assert s.loc["16", "t_crit"] == 20
    assert s.loc["16", "dip"] == pytest.approx(1.0) and s.loc["16", "rise"] == pytest.approx(1.0)
    assert s.loc["16", "transient"] and not s.loc["16", "partial"]
    assert s.loc["2", "dip"] == pytest.approx(0.0) and s.loc["2", "rise"] == 0.0 and not s.loc["2", "transient"]
    assert s.loc["8", "dip"] == pytest.approx(0.4) and s.loc["8", "rise"] == pytest.approx(0.07)
    assert s.loc["8", "partial"] and not s.loc["8", "transient"]
    assert not s.loc["256", "transient"] and s.loc["256", "rise"] == 0.0
    assert s.loc["2", "nearer"] == 0.0 and s.loc["256", "nearer"] == 1.0 and math.isnan(s.loc["∞", "nearer"])
    t = TR.task_diversity_threshold(s)
    assert (t["last_dmmse"], t["first_ridge"]) == (16, 256)
    assert t["threshold"] == pytest.approx(64.0)  # nearer 0 -> 1 halfway in log M between 16 and 256


def test_threshold_interpolates_in_log_m_and_handles_no_crossing():
    def summary(m, nearer):
        return pd.DataFrame({"m": [*m, math.inf], "nearer": [*nearer, math.nan]}, index=[*map(str, m), "∞"])

    t = TR.task_diversity_threshold(summary([4, 8, 16, 32], [0.0, 0.1, 0.3, 0.7]))
    assert (t["last_dmmse"], t["first_ridge"]) == (16, 32)
    assert t["threshold"] == pytest.approx(16 * 2**0.5)
    # a ridge-like model below a dMMSE-like one does not count: the threshold is where it stays ridge
    t = TR.task_diversity_threshold(summary([4, 8, 16, 32], [0.0, 0.6, 0.2, 0.9]))
    assert (t["last_dmmse"], t["first_ridge"]) == (16, 32)
    assert TR.task_diversity_threshold(summary([4, 8], [0.1, 0.2]))["threshold"] is None


def test_llc_crossing_interpolates_in_log_m():
    assert TR.llc_crossing([1, 2, 4, 8], [1.0, 2.0, 3.0, 4.0], 2.5) == pytest.approx(8**0.5)
    assert TR.llc_crossing([1, 2], [1.0, 2.0], 5.0) is None
    assert TR.llc_crossing([1, 2], [3.0, 4.0], 2.0) == 1.0
    with pytest.raises(ValueError, match="increasing"):
        TR.llc_crossing([2, 1], [1.0, 2.0], 1.5)


def test_free_energy_crossing_solves_eq_8():
    dl, dlam = 0.01, 5.0
    n = TR.free_energy_crossing(dl, dlam)
    assert n * dl == pytest.approx(dlam * math.log(n), rel=1e-9)
    # ridge is preferred just before, dMMSE_M just after
    assert TR.free_energy_difference(0.9 * n, dl, dlam) < 0 < TR.free_energy_difference(1.1 * n, dl, dlam)
    # a smaller loss gap or a larger LLC gap postpones the switch (§5.3)
    assert TR.free_energy_crossing(dl / 2, dlam) > n < TR.free_energy_crossing(dl, 2 * dlam)
    assert TR.free_energy_crossing(-0.1, dlam) == math.inf  # dMMSE_M no better: never
    assert TR.free_energy_crossing(dl, -1.0) == 1.0  # dMMSE_M simpler and better: from the start
    with pytest.raises(ValueError, match="n"):
        TR.free_energy_difference([0.0, 1.0], dl, dlam)


# ------------------------------------------------------------------------------------------------
# runs, outputs, PCA, LLC end to end at the smoke profile


def test_runs_outputs_pca_and_llc_end_to_end(tmp_cache, smoke):
    p = replace(smoke, m_grid=(1, 4))
    runs = TR.train_runs(p, progress=False)
    assert list(runs) == [1, 4, None]
    outputs = {M: TR.run_outputs(p, M, progress=False) for M in runs}
    out = outputs[4]
    assert out.ood.shape == (len(out.steps), p.num_eval, p.task.max_examples)
    assert out.root.shape == (len(out.steps), p.pca_batch, p.task.max_examples)
    # the cached outputs are the checkpoints' predictions
    final = runs[4].load_model(int(out.steps[-1]))
    with torch.no_grad():
        np.testing.assert_allclose(out.ood[-1], final.predict(TR.ood_batch(p).tokens).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out.root[0], runs[4].load_model(0).predict(TR.root_batch(p).tokens).numpy(),
                                   rtol=1e-6, atol=1e-6)
    curves = TR.behaviour_curves(p, outputs)
    assert set(curves["M"]) == {"1", "4", "∞"}
    first = curves[curves["M"] == "1"].iloc[0]
    assert first["dmmse_in"] < first["ridge_in"]  # dMMSE_1 knows the task exactly
    inf = curves[curves["M"] == "∞"]
    assert np.allclose(inf["dist_dmmse"], inf["dist_ridge"])  # dMMSE_∞ = ridge
    # the curves are the cached predictions scored against the fixed test sets, per checkpoint
    c4 = curves[curves["M"] == "4"]
    ood, ind = TR.ood_batch(p), TR.in_distribution_batch(p, 4)
    np.testing.assert_allclose(c4["ood_loss"], ((out.ood - ood.ys.numpy()) ** 2).mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(c4["in_loss"], ((out.in_dist - ind.ys.numpy()) ** 2).mean(axis=(1, 2)), rtol=1e-6)
    tasks = task_set(TR.run_task(p, 4)).double()
    dmmse = dmmse_predict(ind.xs.double(), ind.ys.double(), tasks, p.task.noise_variance).numpy()
    ridge = ridge_predict(ind.xs.double(), ind.ys.double(), p.task.noise_variance).numpy()
    np.testing.assert_allclose(c4["dist_dmmse"], ((out.in_dist - dmmse) ** 2).mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(c4["dist_ridge"], ((out.in_dist - ridge) ** 2).mean(axis=(1, 2)), rtol=1e-6)
    assert np.all(c4["dmmse_in"] < c4["ridge_in"])  # each predictor is best on its own prior
    assert np.all(c4["ridge_ood"] < c4["dmmse_ood"])
    pca = TR.joint_trajectory_pca(outputs, n_components=3)
    rows = np.concatenate([o.root.reshape(len(o.steps), -1) for o in outputs.values()])
    scores = pca.project(rows)
    # PCs are ordered by variance and centred on the stacked trajectories
    assert np.all(np.diff(scores.var(axis=0)) <= 1e-9) and np.allclose(scores.mean(axis=0), 0, atol=1e-6)
    llc = TR.final_llcs(p, runs, progress=False)
    assert list(llc.index) == ["1", "4", "∞"] and np.all(np.isfinite(llc["llc_mean"]))


def test_training_is_deterministic_and_the_executor_path_matches_serial(tmp_cache, tmp_path, monkeypatch, smoke):
    p = replace(smoke, m_grid=(2,))
    serial = TR.run_outputs(p, 2, progress=False)
    serial_llc = TR.final_llcs(p, TR.train_runs(p, progress=False), progress=False)
    monkeypatch.setenv("STAGEWISE_CACHE", str(tmp_path / "other"))
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        runs = TR.train_runs(p, executor=pool, progress=False)
    # the workers also wrote each run's outputs and final LLC: the later calls only load them
    assert len(list((tmp_path / "other" / "transient_ridge_outputs").glob("*/outputs.pt"))) == 2  # M = 2 and ∞
    llc_files = sorted((tmp_path / "other" / "llc").glob("*/result.pt"))
    assert len(llc_files) == 2
    pd.testing.assert_frame_equal(TR.final_llcs(p, runs, progress=False), serial_llc)  # bit-identical
    assert sorted((tmp_path / "other" / "llc").glob("*/result.pt")) == llc_files  # loaded, nothing new
    pooled = TR.run_outputs(p, 2, progress=False)
    np.testing.assert_array_equal(serial.ood, pooled.ood)
    np.testing.assert_array_equal(serial.root, pooled.root)
