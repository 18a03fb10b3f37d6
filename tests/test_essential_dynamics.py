"""Essential dynamics ([T] §3.2): PCA of outputs, curvature, osculating circles, evolute cusps, forms."""

import numpy as np
import pytest

from stagewise.essential_dynamics import (
    curvature, essential_dynamics, evolute_cusps, find_forms, fit_pca, osculating_circles, smooth_trajectory,
)


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
    ed = essential_dynamics(outputs, steps, n_components=3, sigma=2.0, window=6)
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
    ed = essential_dynamics(outputs, np.arange(161) * 100.0, sigma=2.0, window=6)
    assert ed.forms
    fig = plot_essential_dynamics(ed, extra_points={"ideal": ed.pca.project(outputs[:1])})
    assert len(fig.axes) == 3
    assert any(line.get_marker() == "*" for line in fig.axes[0].lines)  # the form is marked
    plt.close(fig)
