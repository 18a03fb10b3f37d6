"""Essential dynamics ([DL] §3.2): PCA of outputs, curvature, osculating circles, evolute cusps, forms."""

import numpy as np
import pytest

from stagewise.essential_dynamics import (
    curvature, essential_dynamics, evolute_cusps, find_forms, fit_pca, forms_against_boundaries, osculating_circles,
    smooth_in_log_step, smooth_trajectory,
)
from stagewise.train import checkpoint_schedule


def circle(radius, n=200, arc=2.0, clockwise=False):
    th = np.linspace(0, arc, n) * (-1 if clockwise else 1)
    return np.c_[radius * np.cos(th), radius * np.sin(th)]


def turn(n=201, c=0.5):
    """A trajectory that turns sharply at its middle sample: the hyperbola y = sqrt(x² + c²)."""
    t = np.linspace(-3, 3, n)
    return t, np.c_[t, np.sqrt(t**2 + c**2)]


@pytest.mark.parametrize("radius", [0.5, 3.0, 40.0])
def test_curvature_of_a_circle_is_one_over_r(radius):
    k = curvature(circle(radius))
    assert k[2:-2] == pytest.approx(1 / radius, rel=1e-3)
    assert curvature(circle(radius, clockwise=True))[2:-2] == pytest.approx(-1 / radius, rel=1e-3)
    centres, radii, _ = osculating_circles(circle(radius))
    assert np.allclose(centres[2:-2], 0.0, atol=1e-3 * radius)
    assert radii[2:-2] == pytest.approx(radius, rel=1e-3)


@pytest.mark.parametrize("a", [0.3, 1.0, 5.0])
def test_curvature_of_a_parabola_at_its_vertex_is_2a(a):
    x = np.linspace(-1, 1, 401)
    k = curvature(np.c_[x, a * x**2])
    assert k[200] == pytest.approx(2 * a, rel=1e-3)
    assert np.argmax(k) == 200  # the vertex is the curvature maximum


def test_curvature_ignores_the_parametrisation():
    t = np.linspace(0, 1, 300) ** 2  # non-uniform samples along the same circle
    c = np.c_[2 * np.cos(2 * t), 2 * np.sin(2 * t)]
    assert curvature(c)[5:-5] == pytest.approx(0.5, rel=3e-2)


def test_cusp_of_the_evolute_where_the_trajectory_turns():
    _, curve = turn()
    cusps = evolute_cusps(curve)
    assert len(cusps) == 1
    assert cusps[0].index == 100 and cusps[0].kind == "max"
    assert cusps[0].curvature == pytest.approx(1 / 0.5, rel=1e-2)  # κ = 1/c at the vertex
    # the cusp on the evolute is the centre of curvature, a distance 1/κ above the vertex
    assert cusps[0].centre == pytest.approx([0.0, 0.5 + 0.5], abs=1e-2)


def test_no_cusp_on_a_circle_arc_even_after_smoothing_noise():
    assert evolute_cusps(circle(3.0)) == ()
    rng = np.random.default_rng(0)
    noisy = circle(3.0, n=200) + rng.normal(0, 1e-3, (200, 2))
    assert evolute_cusps(smooth_trajectory(noisy, sigma=8.0), edge=20) == ()


def test_ellipse_has_its_four_vertices():
    e = np.linspace(0, 2 * np.pi, 401)
    cusps = evolute_cusps(np.c_[2 * np.cos(e), np.sin(e)], edge=3)
    # interior vertices at θ = π/2 (min κ), π (max), 3π/2 (min); θ = 0 sits on the edge
    assert [(c.index, c.kind) for c in cusps] == [(100, "min"), (200, "max"), (300, "min")]


def test_pca_recovers_a_planted_plane_and_projects_without_refitting():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(60, 2)))[0].T  # two orthonormal directions in R^60
    scores = np.c_[np.linspace(-3, 3, 80), np.sin(np.linspace(0, 3, 80))]
    outputs = 5.0 + scores @ basis + rng.normal(0, 1e-4, (80, 60))
    pca = fit_pca(outputs.reshape(80, 6, 10), n_components=2)  # per-checkpoint outputs of any shape
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-4)
    proj = pca.project(outputs)
    centred = scores - scores.mean(0)
    # the projection is the planted trajectory up to a rotation in the plane: distances are kept
    d = lambda z: np.linalg.norm(z[:, None] - z[None], axis=-1)  # noqa: E731
    assert np.allclose(d(proj), d(centred), atol=1e-3)
    ideal = 5.0 + np.array([[10.0, 0.0]]) @ basis  # a point never seen by the fit
    assert np.linalg.norm(pca.project(ideal) - pca.project(outputs).mean(0)) == pytest.approx(
        np.linalg.norm(np.array([10.0, 0.0]) - scores.mean(0)), rel=1e-3)
    assert np.allclose(pca.project(pca.lift(proj[:3])), proj[:3])
    with pytest.raises(ValueError, match="features"):
        pca.project(np.zeros((2, 7)))


def test_joint_pca_over_runs_is_the_pca_of_their_union():
    rng = np.random.default_rng(1)
    run_a, run_b = rng.normal(size=(30, 20)), rng.normal(size=(40, 20)) + 1.0
    joint = fit_pca([run_a, run_b], n_components=3)
    union = fit_pca(np.concatenate([run_a, run_b]), n_components=3)
    assert np.allclose(joint.components, union.components)
    assert np.allclose(joint.project(run_b), union.project(run_b))


def test_form_found_at_a_turn_seen_in_every_projection():
    t, _ = turn()
    trajectory = np.c_[t, np.sqrt(t**2 + 0.25), np.exp(-(t**2)) + 0.2 * t]
    cusps, forms = find_forms(trajectory, steps=np.arange(len(t)))
    assert set(cusps) == {(0, 1), (0, 2), (1, 2)}
    assert len(forms) == 1 and abs(forms[0].index - 100) <= 3
    assert len(forms[0].cusps) == 3


def turning_outputs(n, rng, noise=1e-3):
    """Outputs on 50 inputs driven by a 3-D latent trajectory that turns at its middle sample."""
    t, _ = turn(n=n)
    latent = np.c_[t, np.sqrt(t**2 + 0.25), np.exp(-(t**2)) + 0.2 * t]
    return latent @ rng.normal(size=(3, 50)) + rng.normal(0, noise, (n, 50))


def test_essential_dynamics_end_to_end_from_outputs():
    rng = np.random.default_rng(2)
    outputs = turning_outputs(161, rng)
    steps = np.arange(161) * 100.0
    ed = essential_dynamics(outputs, steps, n_components=3, parametrisation="index", sigma=2.0, window=6)
    assert ed.pca.explained_variance_ratio.sum() > 0.999
    # PC mixing moves each projection's vertex a little; the form is where all of them agree
    at_turn = [f for f in ed.forms if abs(f.step - 8000) <= 300]
    assert len(at_turn) == 1 and len(at_turn[0].cusps) == 3
    # lifted back to output space, the form sits near the outputs at the turn
    lifted = ed.pca.lift(at_turn[0].point)[0]
    assert np.linalg.norm(lifted - outputs[80]) < 0.25 * np.linalg.norm(outputs[0] - outputs[80])


def test_smoothing_methods_and_errors():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 101)
    clean = np.c_[x, x**2]
    noisy = clean + rng.normal(0, 0.01, clean.shape)
    for method in ("gaussian", "savgol"):
        sm = smooth_trajectory(noisy, method=method, sigma=2.0, window=11)
        assert np.sqrt(np.mean((sm - clean)[10:-10] ** 2)) < 0.6 * np.sqrt(np.mean((noisy - clean) ** 2))
    with pytest.raises(ValueError, match="method"):
        smooth_trajectory(noisy, method="median")
    with pytest.raises(ValueError, match="curve"):
        curvature(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(np.zeros((5, 4)), n_components=9)


def test_plot_essential_dynamics():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stagewise.plotting import plot_essential_dynamics

    outputs = turning_outputs(161, np.random.default_rng(2))
    ed = essential_dynamics(outputs, np.arange(161) * 100.0, parametrisation="index", sigma=2.0, window=6)
    assert ed.forms
    fig = plot_essential_dynamics(ed, extra_points={"ideal": ed.pca.project(outputs[:1])})
    assert len(fig.axes) == 3
    assert any(line.get_marker() == "*" for line in fig.axes[0].lines)  # the form is marked
    plt.close(fig)


# --- the notebooks' setting: log-step parametrisation, chord tests ------------------------------

PAPER_STEPS = checkpoint_schedule(500_000).astype(float)  # 100 linear + 90 log-spaced (App. D.2.3)


def _lift(latent, rng, noise, n_features=200):
    """Outputs on ``n_features`` inputs: the latent trajectory through a random linear map, plus
    independent noise of ``noise`` times the latent's extent at every checkpoint."""
    basis = np.linalg.qr(rng.normal(size=(n_features, latent.shape[1])))[0].T
    extent = np.ptp(latent, axis=0).max()
    return 1.0 + latent @ basis + rng.normal(0, noise * extent, (len(latent), n_features))


def _polyline(u, corners, directions, rounding=0.04):
    """A path in R^3 moving at unit speed in u along ``directions`` (one per segment), turning at
    the ``corners`` (in u); each turn rounded over ~``rounding`` decades (a smooth vertex)."""
    directions = [np.asarray(d, float) / np.linalg.norm(d) for d in directions]
    velocity = np.zeros((len(u), 3))
    for k, d in enumerate(directions):
        lo = -np.inf if k == 0 else corners[k - 1]
        hi = np.inf if k == len(directions) - 1 else corners[k]
        # a smooth step into and out of segment k
        on = 1 / (1 + np.exp(-(u - lo) / rounding)) * 1 / (1 + np.exp((u - hi) / rounding))
        velocity += on[:, None] * d
    du = np.gradient(u)
    return np.cumsum(velocity * du[:, None], axis=0)


def test_log_step_ed_finds_the_planted_turns_and_nothing_else():
    u = np.log10(PAPER_STEPS + 1)
    corners = (3.0, 4.6)  # 1k and 40k steps
    latent = _polyline(u, corners, [(1, 0, 0), (0.2, 1, 0.4), (-0.6, 0.3, 1)])
    for seed in range(6):
        ed = essential_dynamics(_lift(latent, np.random.default_rng(seed), noise=0.01), PAPER_STEPS)
        found = sorted(f.step for f in ed.forms)
        assert len(found) == 2, found
        for f, corner in zip(found, corners):
            assert abs(np.log10(f + 1) - corner) < 0.15  # within a factor 1.4
        assert all(len(f.cusps) == 3 for f in ed.forms)
        assert all(f.turn >= 30 and f.snr >= 5 for f in ed.forms)


def test_log_step_ed_finds_no_form_on_a_smooth_trajectory_that_stalls_in_noise():
    """A circular arc in the PC1-PC2 plane whose speed dies out (the outputs stand still at the
    end, where the paper's linear checkpoints crowd), with PC3 nothing but noise: no vertex and
    no sharp turn, so no form, although noise gives κ many local maxima."""
    u = np.log10(PAPER_STEPS + 1)
    theta = 1.4 * np.tanh(u / 3)  # 80 degrees of arc, at most 27 degrees per decade, stalling
    latent = np.c_[np.cos(theta), np.sin(theta), np.zeros_like(u)]
    for seed in range(6):
        outputs = _lift(latent, np.random.default_rng(seed), noise=0.01)
        ed = essential_dynamics(outputs, PAPER_STEPS)
        assert ed.forms == ()
        # the same data indexed by checkpoint and lightly smoothed: noise passes for turns
        old = essential_dynamics(outputs, PAPER_STEPS, parametrisation="index", sigma=1.0)
        assert len(old.forms) >= 1


def test_smooth_in_log_step_recovers_a_curve_and_reports_its_standard_error():
    u = np.log10(PAPER_STEPS + 1)
    clean = np.c_[np.sin(u), u**2 / 10]
    fits = []
    for seed in range(200):
        noisy = clean + np.random.default_rng(seed).normal(0, 0.05, clean.shape)
        grid, fit, se = smooth_in_log_step(PAPER_STEPS, noisy)
        fits.append(fit)
    fits = np.array(fits)
    g = np.log10(grid + 1)
    truth = np.c_[np.sin(g), g**2 / 10]
    assert grid[0] == 0 and grid[-1] == pytest.approx(500_000) and np.all(np.diff(g) > 0)
    assert np.all((np.diff(g) <= 0.1 / 4 + 1e-12) & (np.diff(g) > 0.024))  # >= 4 samples per 0.1-decade bandwidth
    assert np.abs(fits.mean(0) - truth).max() < 0.03  # small bias (curvature of the truth)
    # the reported standard error is the spread of the fit across noise draws, dense or sparse
    spread = fits.std(0)
    ratio = se / spread
    assert 0.8 < np.median(ratio) < 1.2 and 0.6 < ratio.min() and ratio.max() < 1.5
    at = lambda decade: np.argmin(np.abs(g - decade))  # noqa: E731
    assert se[at(5.4)].max() < 0.5 * se[at(2.4)].min()  # the crowded late checkpoints average out
    with pytest.raises(ValueError, match="increasing"):
        smooth_in_log_step(PAPER_STEPS[::-1], clean)
    with pytest.raises(ValueError, match="bandwidth"):
        smooth_in_log_step(PAPER_STEPS, clean, bandwidth=0.0)
    with pytest.raises(ValueError, match="parametrisation"):
        essential_dynamics(np.zeros((10, 4)) + np.arange(10)[:, None], np.arange(10.0), parametrisation="arc")


def test_forms_against_boundaries_uses_a_factor_in_steps():
    rows = forms_against_boundaries([1_100, 30_000, 200_000], [1_000, 40_000, 126_000, 320_000], factor=1.5)
    assert [r["nearest_form"] for r in rows] == [1_100, 30_000, 200_000, 200_000]
    assert [r["corroborated"] for r in rows] == [True, True, False, False]  # 200k/126k = 1.59 > 1.5
    assert rows[1]["ratio"] == pytest.approx(0.75)
    assert forms_against_boundaries([], [10.0]) == [{"boundary": 10.0, "nearest_form": None, "ratio": None,
                                                      "corroborated": False}]
    with pytest.raises(ValueError, match="factor"):
        forms_against_boundaries([1.0], [1.0], factor=1.0)


def test_plot_ed_over_training_marks_the_forms():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stagewise.essential_dynamics import turning_profile
    from stagewise.plotting import plot_ed_over_training

    u = np.log10(PAPER_STEPS + 1)
    latent = _polyline(u, (3.0, 4.6), [(1, 0, 0), (0.2, 1, 0.4), (-0.6, 0.3, 1)])
    ed = essential_dynamics(_lift(latent, np.random.default_rng(0), noise=0.01), PAPER_STEPS)
    steps, turn, snr = turning_profile(ed)
    assert len(steps) == len(ed.smoothed) - 2 * ed.settings["arm"]
    for f in ed.forms:  # each form is a local maximum of the profile, above the threshold
        i = int(np.argmin(np.abs(steps - f.step)))
        assert turn[i] == pytest.approx(f.turn) and turn[i] >= 30 and turn[i] == turn[max(0, i - 3):i + 4].max()
    fig = plot_ed_over_training(ed)
    stars = [ln for ln in fig.axes[1].lines if ln.get_marker() == "*"]
    assert len(stars) == len(ed.forms) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="chord tests"):
        turning_profile(essential_dynamics(_lift(latent, np.random.default_rng(0), 0.01), PAPER_STEPS,
                                           parametrisation="index"))
