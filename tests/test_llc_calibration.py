"""The D.3.3 calibration: representative checkpoints, cell classes, the grid + long chain, figures."""

import functools
import json

import numpy as np
import pytest
import torch

from stagewise.data.regression import RegressionTask, regression_loss, sample_batch
from stagewise.llc import (CalibrationSettings, SGLDConfig, calibration_checkpoints, classify_estimate, estimate_llc,
                           plot_calibration_region, plot_calibration_traces, plot_running_llc, sgld_calibration)
from stagewise.llc.diagnostics import draws_from_trace
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig

MODEL_FN = functools.partial(RegressionTransformer, RegressionTransformerConfig(n_layers=1, n_heads=2, d_embed=8, d_mlp=8))


def test_calibration_checkpoints_early_peak_boundary_late():
    steps = np.array([0, 10, 20, 50, 100, 200, 500, 1000, 2000])
    llc = np.array([0.0, 1, 3, 9, 7, 6, 5, 4, 4.5])
    picks = calibration_checkpoints(steps, llc, boundaries=[40, 150, 1800])
    # early: first λ̂ ≥ 9/4 (step 20); middle of 10..2000 in log steps is ≈141: boundary 150, the
    # step before it is 100
    assert picks == {"early": 20, "peak": 50, "boundary": 100, "late": 2000}
    assert list(picks.values()) == sorted(picks.values())
    # a boundary whose neighbour is already taken adds nothing; no boundary: three checkpoints
    assert calibration_checkpoints(steps, llc, boundaries=[60]) == {"early": 20, "peak": 50, "late": 2000}
    assert calibration_checkpoints(steps, llc) == {"early": 20, "peak": 50, "late": 2000}
    with pytest.raises(ValueError):
        calibration_checkpoints([0], [1.0])


def _quadratic(epsilon, nbeta, draws, burnin=0, gamma=1.0, centre=0.0):
    cfg = SGLDConfig(epsilon=epsilon, gamma=gamma, nbeta=nbeta, num_chains=2, num_draws=draws, num_burnin=burnin, seed=0)
    return estimate_llc(lambda p, b: ((p["w"] - centre) ** 2).sum(), {"w": torch.zeros(10, dtype=torch.float64)}, cfg,
                        progress=False)


def test_cells_are_classified_by_their_failure_mode():
    assert classify_estimate(_quadratic(1e-2, 10.0, 1000, 100)) == "good"
    assert classify_estimate(_quadratic(0.3, 100.0, 100)) == "diverged"  # ε nβ K'' = 60 > 2: unstable
    assert classify_estimate(_quadratic(1e-4, 10.0, 200)) == "stalled"  # relaxation ≈ 500 steps > 200 draws
    # w* = 0 is not the minimum (centre 0.5) and γ is weak: the chains find lower loss
    assert classify_estimate(_quadratic(1e-2, 10.0, 400, 100, gamma=0.1, centre=0.5)) == "escape"


@pytest.fixture
def calibration(tmp_cache):
    states = {}
    for step in (10, 20):
        torch.manual_seed(step)
        states[step] = {k: v.clone() for k, v in MODEL_FN().state_dict().items()}
    b = sample_batch(RegressionTask(), 96, torch.Generator().manual_seed(1))
    cfg = SGLDConfig(epsilon=1e-4, gamma=100.0, num_chains=2, num_draws=12, num_burnin=3, batch_size=32, seed=0)
    settings = CalibrationSettings(epsilon_factors=(0.1, 1.0), nbeta_factors=(1.0, 3.0), gamma_factors=(1.0, 3.0),
                                   num_draws=10, long_factor=3)
    return sgld_calibration("toy", {"early": 10, "late": 20}, states, MODEL_FN, regression_loss, (b.tokens, b.ys), cfg,
                            settings, progress=False)


def test_sgld_calibration_grid_long_chain_and_record(calibration):
    cal = calibration
    cells = cal.cells
    assert len(cells) == 2 * 2 * 2 * 2 and cells["is_profile"].sum() == 2  # 2 ε × 2 nβ × 2 γ × 2 checkpoints
    assert set(cells["gamma"]) == {100.0, 300.0}
    assert set(cells["class"]) <= {"good", "stalled", "escape", "diverged"}
    table = cal.long_table()
    for step in (10, 20):
        long, prof = cal.long[step], cal.profile[step]
        assert long.llc_trace.shape == (1, 36)
        # same seed: the long chain's first 12 draws are the profile's chain 0, so its running
        # estimate at the profile's draw count is that chain's λ̂
        assert long.llc_trace[0, 11] == pytest.approx(prof.llc_per_chain[0], rel=1e-9)
        row = table.set_index("step").loc[step]
        settled = draws_from_trace(long.llc_trace)[0, 18:].mean()
        assert row["long_settled"] == pytest.approx(settled)
        assert row["ratio"] == pytest.approx(prof.llc_mean / settled)
    assert cal.adequate == bool(table["within"].all())
    near = table["long_settled"].abs() <= 2 * table["settled_se"]
    assert (table["near_zero"] == near).all()
    allowed = np.where(near, 2 * table["settled_se"], 0.05 * table["long_settled"].abs())
    assert np.allclose(table["allowed"], allowed)
    assert (table["within"] == ((table["profile"] - table["long_settled"]).abs() <= allowed)).all()
    assert ("NOT adequate" in cal.sentence()) != cal.adequate
    rec = json.loads(json.dumps(cal.to_record(), default=float))
    assert rec["chosen"]["epsilon"] == 1e-4 and len(rec["cells"]) == 16 and rec["adequate"] == cal.adequate
    assert {u["epsilon"] for u in rec["usable"]} <= {1e-5, 1e-4}


def _with_chains(cal, long_draws: dict, profile_llc: dict):
    """``cal`` with its long chains replaced by chains of the given draws d_t and its profile's
    estimate moved to the given λ̂ (same configs: only the numbers the budget is judged on)."""
    import dataclasses

    long, profile = {}, {}
    for step, d in long_draws.items():
        trace = (np.cumsum(d) / np.arange(1, len(d) + 1))[None, :]
        long[step] = dataclasses.replace(cal.long[step], llc_trace=trace, llc_mean=float(trace[0, -1]),
                                         llc_per_chain=trace[:, -1].copy())
        prof = cal.profile[step]
        profile[step] = dataclasses.replace(prof, llc_mean=float(profile_llc[step]),
                                            llc_per_chain=np.full(len(prof.llc_per_chain), float(profile_llc[step])))
    return dataclasses.replace(cal, long=long, profile=profile)


def test_adequacy_judges_near_zero_values_by_the_long_chains_noise(calibration):
    """A ratio to a settled value within 2 standard errors of 0 means nothing: there the profile must
    lie within 2 standard errors of it; elsewhere within 5%, however noisy the long chain."""
    rng = np.random.default_rng(0)
    n = calibration.long[10].llc_trace.shape[1]
    near_zero = 0.01 + 0.5 * rng.standard_normal(n)  # settled ≈ 0 ± 0.1: 5% of it is nothing
    large = 10.0 + 0.1 * rng.standard_normal(n)  # settled ≈ 10 ± 0.02: 5% is 25 standard errors
    settled0, settled1 = near_zero[n // 2:].mean(), large[n // 2:].mean()

    cal = _with_chains(calibration, {10: near_zero, 20: large}, {10: settled0 + 0.1, 20: 0.97 * settled1})
    t = cal.long_table().set_index("step")
    assert t.loc[10, "settled_se"] == pytest.approx(0.5 / np.sqrt(n - n // 2), rel=0.6)
    assert t.loc[10, "near_zero"] and not t.loc[20, "near_zero"]
    assert t.loc[10, "allowed"] == pytest.approx(2 * t.loc[10, "settled_se"])
    assert t.loc[20, "allowed"] == pytest.approx(0.05 * settled1)
    assert abs(t.loc[10, "ratio"] - 1) > 0.5  # the ratio alone would call it inadequate
    assert bool(t["within"].all()) and cal.adequate
    sentence = cal.sentence()
    assert "NOT" not in sentence and "too near 0" in sentence and "step 10" in sentence and "97.0%" in sentence

    # a noisy long chain clear of 0 (2 standard errors above 5% of it) is still held to 5%
    noisy = 5.0 + 1.5 * rng.standard_normal(n)
    settled2 = noisy[n // 2:].mean()
    vague = _with_chains(calibration, {10: noisy, 20: large}, {10: 0.9 * settled2, 20: settled1})
    row = vague.long_table().set_index("step").loc[10]
    assert 2 * row["settled_se"] > 0.05 * settled2 and not row["near_zero"]
    assert not row["within"] and not vague.adequate

    # outside the noise at the near-zero checkpoint, or 10% low at the large one: not adequate
    far = _with_chains(calibration, {10: near_zero, 20: large}, {10: settled0 + 1.0, 20: 0.97 * settled1})
    low = _with_chains(calibration, {10: near_zero, 20: large}, {10: settled0, 20: 0.9 * settled1})
    for bad, step in ((far, 10), (low, 20)):
        assert not bad.adequate and not bad.long_table().set_index("step").loc[step, "within"]
        assert "NOT adequate" in bad.sentence() and f"worst at step {step}" in bad.sentence()
    rec = json.loads(json.dumps(low.to_record(), default=float))
    assert rec["adequate"] is False and rec["tolerance_sigmas"] == 2.0
    assert [r["within"] for r in rec["long_chain"]] == [True, False]


def test_calibration_figures(calibration):
    import matplotlib.pyplot as plt

    fig = plot_calibration_traces(calibration)
    assert len(fig.axes) == 8  # rows: the 4 (nβ, γ) pairs; columns: the 2 ε
    assert sum(ax.get_title().startswith("profile") for ax in fig.axes) == 1
    fig2 = plot_calibration_region(calibration)
    fig3 = plot_running_llc(calibration)
    assert len(fig2.axes) == 2 and len(fig3.axes) == 2
    plt.close("all")


def test_save_calibration_figures_names_and_stamps_the_three(calibration, tmp_path):
    import matplotlib.pyplot as plt

    from stagewise.llc import save_calibration_figures

    out = tmp_path / "figures"
    figs = save_calibration_figures(calibration, "toy", "cpu profile, seed 0", directory=out, formats=("png",))
    assert sorted(p.name for p in out.iterdir()) == ["figD6_toy_sgld_grid.png", "figD6_toy_sgld_region.png",
                                                           "figD7_toy_running_llc.png"]
    assert all(f.get_suptitle().endswith("\ncpu profile, seed 0") for f in figs)
    plt.close("all")


def test_settings_must_contain_the_profile_cell():
    with pytest.raises(ValueError, match="1.0"):
        CalibrationSettings(epsilon_factors=(0.5, 2.0))
    with pytest.raises(ValueError, match="1.0"):
        CalibrationSettings(gamma_factors=(3.0,))
