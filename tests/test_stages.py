"""Stage detection (main paper App. A.5) on synthetic curves with known stage boundaries."""

import numpy as np
import pytest

from stagewise.stages import boundary_positions, detect_stages, synthetic_stage_curve

# A curve shaped like the papers' (rise, fall, rise, slow rise; Tables 1-2 of [DL]) on 120
# log-spaced checkpoints, small enough for a test to take well under a second.
STEPS = np.unique(np.geomspace(10, 100_000, 120).round())
TRUE_BOUNDARIES = np.array([200.0, 2_000.0, 15_000.0])
DELTAS = [30.0, -15.0, 20.0, 5.0]
DIRECTIONS = ["increase", "decrease", "increase", "increase"]
CLEAN = synthetic_stage_curve(STEPS, TRUE_BOUNDARIES, DELTAS, start=10.0, initial=3.0)
NOISE = 0.01 * np.ptp(CLEAN)  # 1% of the curve's range, per checkpoint
LOG_TOLERANCE = 0.25  # |log(detected) - log(true)| allowed, i.e. within a factor 1.28 in steps


def noisy(seed):
    return CLEAN + np.random.default_rng(seed).normal(0.0, NOISE, len(STEPS))


@pytest.mark.parametrize("seed", range(5))
def test_finds_every_true_boundary_and_no_spurious_one(seed):
    result = detect_stages(STEPS, noisy(seed), n_samples=50, seed=seed)
    assert len(result.boundaries) == len(TRUE_BOUNDARIES), result.boundaries
    err = np.abs(np.log(result.boundaries + 1) - np.log(TRUE_BOUNDARIES + 1))
    assert np.all(err < LOG_TOLERANCE), (result.boundaries, err)
    assert [s.direction for s in result.stages] == DIRECTIONS
    assert np.all(np.diff(result.boundaries) > 0)
    # stages tile the run and their Δ match the planted ones
    assert result.stages[0].start == STEPS[0] and result.stages[-1].end == STEPS[-1]
    assert [s.end for s in result.stages[:-1]] == pytest.approx(list(result.boundaries))
    assert [s.delta for s in result.stages] == pytest.approx(DELTAS, abs=3.0)


def test_boundary_intervals_are_tight_and_supported():
    result = detect_stages(STEPS, noisy(0), n_samples=100)
    lo, hi = result.intervals.T
    assert np.all(lo <= result.boundaries + 1e-9) and np.all(result.boundaries <= hi + 1e-9)
    assert np.all(np.log(hi + 1) - np.log(lo + 1) < 0.6)
    assert np.all(result.support > 0.9)
    # more noise: wider intervals
    loud = detect_stages(STEPS, CLEAN + np.random.default_rng(0).normal(0, 4 * NOISE, len(STEPS)), n_samples=100)
    width = lambda r: np.nanmean(np.log(r.intervals[:, 1] + 1) - np.log(r.intervals[:, 0] + 1))  # noqa: E731
    assert width(loud) > width(result)


def test_smoothed_curve_and_analytic_slope_match_the_truth():
    result = detect_stages(STEPS, noisy(1), n_samples=0)
    assert np.sqrt(np.mean((result.smoothed - CLEAN) ** 2)) < NOISE
    x = np.log(STEPS + 1)
    true_slope = np.gradient(synthetic_stage_curve(np.exp(np.linspace(x[0], x[-1], 4000)) - 1, TRUE_BOUNDARIES,
                                                   DELTAS, start=10.0), np.linspace(x[0], x[-1], 4000))
    true_at = np.interp(x, np.linspace(x[0], x[-1], 4000), true_slope)
    inner = slice(5, -5)
    assert np.max(np.abs(result.slope[inner] - true_at[inner])) < 0.2 * np.max(np.abs(true_at))
    assert np.isclose(result.noise_std, NOISE, rtol=0.3)


def test_stds_enter_as_known_noise():
    stds = np.full(len(STEPS), NOISE)
    result = detect_stages(STEPS, noisy(2), stds=stds, n_samples=0)
    assert len(result.boundaries) == 3
    assert result.noise_std < NOISE  # the known part is not re-learned as white noise


def test_flat_noisy_curve_has_no_boundary():
    flat = 10.0 + np.random.default_rng(3).normal(0, 0.5, len(STEPS))
    result = detect_stages(STEPS, flat, n_samples=0)
    assert len(result.boundaries) == 0 and len(result.stages) == 1


def test_linear_time_option():
    steps = np.arange(0.0, 101.0)
    values = -((steps - 50.0) ** 2) / 100 + np.random.default_rng(0).normal(0, 0.1, len(steps))
    result = detect_stages(steps, values, log_time=False, length_scale=15.0, min_stage_length=5.0, n_samples=0)
    assert result.boundaries == pytest.approx([50.0], abs=3.0)
    assert [s.direction for s in result.stages] == ["increase", "decrease"]


def test_boundary_rule_on_known_slopes():
    x = np.linspace(0, 10, 201)
    # sign change at x = 3.0 (between checkpoints): interpolated exactly for a linear slope
    assert boundary_positions(x, 3.0 - x, 0.5) == pytest.approx([3.0])
    # same-sign plateau: |slope| has a minimum below tolerance at x = 6 -> one boundary there
    slope = 1.0 + 0.0 * x
    slope[(x > 5) & (x < 7)] = np.abs(x[(x > 5) & (x < 7)] - 6) + 0.05
    assert boundary_positions(x, slope, 0.5) == pytest.approx([6.0])
    # a minimum above the tolerance is not a plateau
    assert len(boundary_positions(x, slope + 1.0, 0.5)) == 0
    # noise crossing zero many times inside one plateau still gives one boundary
    wiggle = np.where(np.abs(x - 5) < 1, 0.1 * np.sin(40 * x), np.sign(x - 5) * 2.0)
    assert len(boundary_positions(x, wiggle, 0.5)) == 1
    # a stage shorter than min_stage_length is merged away
    slope = np.where(np.abs(x - 5) < 0.1, -2.0, 2.0)
    assert len(boundary_positions(x, slope, 0.5, min_stage_length=0.0)) == 2
    assert len(boundary_positions(x, slope, 0.5, min_stage_length=0.5)) == 0


@pytest.mark.parametrize(
    "steps, values, match",
    [
        (np.arange(5.0), np.arange(5.0), "steps: need at least"),
        (np.array([0, 1, 2, 2, 3, 4, 5, 6, 7.0]), np.arange(9.0), "strictly increasing"),
        (np.arange(9.0)[::-1], np.arange(9.0), "strictly increasing"),
        (np.arange(10.0), np.r_[np.arange(9.0), np.nan], "NaN"),
        (np.arange(10.0), np.r_[np.arange(9.0), np.inf], "NaN/inf"),
        (np.arange(10.0), np.arange(11.0), "same length"),
    ],
)
def test_clear_errors(steps, values, match):
    with pytest.raises(ValueError, match=match):
        detect_stages(steps, values)


def test_stds_shape_error():
    with pytest.raises(ValueError, match="stds"):
        detect_stages(STEPS, CLEAN, stds=np.ones(3))


def test_plot_stages_draws_every_panel():
    import matplotlib

    matplotlib.use("Agg")
    from stagewise.plotting import plot_stages

    result = detect_stages(STEPS, noisy(0), n_samples=20)
    fig = plot_stages(result, STEPS, noisy(0), stds=np.full(len(STEPS), NOISE), loss=np.exp(-CLEAN / 30),
                      extra={"weight norm": np.sqrt(STEPS)}, title="synthetic")
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_xscale() == "log"
    # one shaded span per stage on every panel
    assert sum(p.__class__.__name__ == "Rectangle" and p.get_alpha() == 0.35 for p in axes[1].patches) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_edge_plateaus_mark_the_onset_of_the_first_change():
    from stagewise.stages import detect_stages, synthetic_stage_curve

    steps = np.unique(np.round(np.geomspace(1, 10_000, 120))).astype(float)
    # flat until step 150, a rise to 2k, a fall to 8k, flat again: the default rule finds the peak
    # (and the end of the fall), not the onset of the rise
    values = synthetic_stage_curve(steps, [150, 2000, 8000], [0.0, 100.0, -50.0, 0.0], start=1.0)
    default = detect_stages(steps, values, n_samples=0)
    with_edges = detect_stages(steps, values, n_samples=0, edge_plateaus=True)
    assert not any(abs(np.log(b / 150)) < 0.4 for b in default.boundaries)
    onset = [b for b in with_edges.boundaries if abs(np.log(b / 150)) < 0.4]
    assert len(onset) == 1
    end_of_fall = [b for b in with_edges.boundaries if abs(np.log(b / 8000)) < 0.4]
    assert len(end_of_fall) == 1
    assert len(with_edges.boundaries) == len(default.boundaries) + 2


def test_slope_dips_find_the_saddle_between_two_decreases_and_none_in_one_fall():
    from stagewise.stages import slope_dips

    steps = np.unique(np.geomspace(1, 500_000, 190).round())
    rng = np.random.default_rng(0)
    # two decreases meeting at a shoulder near 126k (the paper's LR3|LR4), against one smooth fall
    two = synthetic_stage_curve(steps, [1_000, 40_000, 126_000, 320_000], [60, 100, -40, -40, 10], start=10)
    one = synthetic_stage_curve(steps, [1_000, 40_000, 320_000], [60, 100, -80, 10], start=10)
    dips_two = slope_dips(detect_stages(steps, two + rng.normal(0, 0.3, len(steps))), 40_000, 320_000)
    dips_one = slope_dips(detect_stages(steps, one + rng.normal(0, 0.3, len(steps))), 40_000, 320_000)
    assert len(dips_two) == 1
    assert 90_000 < dips_two[0]["step"] < 180_000 and dips_two[0]["slope"] < 0
    assert dips_two[0]["relative"] < 0.3
    assert dips_one == []
    with pytest.raises(ValueError, match="start must be below end"):
        slope_dips(detect_stages(steps, one), 5, 5)
