"""Essential dynamics: PCA of model outputs over training and the geometry of the trajectory.

[DL] §3.2 and Fig. 2; [E] Fig. 9 (citation keys: docs/index.md):

* a_t = (f_{w_t}(x_i))_{i=1..n} ∈ ℝ^{mn}, the outputs on a fixed input set at checkpoint t (eq. 7 of [DL]);
  the checkpoints' a_t are stacked and PCA is fitted (jointly over several runs: on their union);
* the developmental trajectory γ is the projection onto the top PCs, smoothed along training;
* for each plane projection γ_{ij} (a pair of PCs): osculating circles (radius 1/|κ|), their
  centres (the evolute), and the evolute's cusps = vertices of γ_{ij} = local extrema of the
  curvature κ (Bruce & Giblin 1992, Prop. 7.2); a cusp singularity of γ_{ij} shows up as a spike of κ;
* a *form* is a time at which every plane projection has such a cusp; it is located in PC space
  (and lifted to output space) from the osculating centres there.

How the trajectory is parametrised and smoothed, and when a vertex counts, is ours (the papers'
§B.8, which says how, was not available to us); chosen once, before looking at any run's forms,
for these reasons:

* **Parametrised by log10(step + 1)**, the axis the LLC's stages are found on (stage boundaries
  are a factor apart, not a number of steps apart). The paper's checkpoints (100 linear + 90
  log-spaced) crowd the late steps, where outputs barely move: indexed by checkpoint, those
  stretches look long and their noise looks like turns (on the ``cpu`` regression run, seed 0, the
  checkpoint-indexed trajectory smoothed by a 3-checkpoint Gaussian has 24 forms, by a 1-checkpoint
  one 48, against the LLC's 3 boundaries; this parametrisation finds 2).
* **Smoothed by a local-linear Gaussian kernel fit in log step** (:func:`smooth_in_log_step`),
  bandwidth :data:`BANDWIDTH_DECADES` = 0.1 decade, evaluated on a uniform grid of 4 points per
  bandwidth. Dense late checkpoints are averaged, sparse early ones are interpolated, and the
  fit's standard error at every grid point comes with it (the residual noise of each PC times the
  norm of the fit's weights). 0.1 decade is half the factor-1.5 window (0.18 decade) in which a
  form is said to corroborate an LLC boundary, so smoothing cannot move a turn out of it.
* **A form** (:func:`find_forms`) is a turning point of the trajectory in its top three PCs
  at which every plane projection has a vertex (a local maximum of |κ|, prominence ≥ 0.5 in
  ln|κ|) within :data:`ARM_DECADES` = 0.3 decade (a factor 2 in steps). The turning point is a
  local maximum of the angle between the chords from it to the trajectory 0.3 decade before
  and after it; it counts when that angle is at least :data:`MIN_TURN_DEGREES` = 30° and each
  chord is at least :data:`MIN_SNR` = 10 standard errors of the smoothed curve long (so the
  angle's own noise, ~1/SNR radians ≈ 6°, is a fifth of the threshold). A wiggle of noise where
  the outputs stand still fails the length test, a gentle bend the angle test, and a circular
  arc, which turns without a vertex, the planes' test; an accentuated turn passes all three.
  No form lies within 0.3 decade of either end (its chords would be cut). Minima of |κ| (the
  other kind of vertex) are not used: they never come with a turn. These values were set on
  synthetic trajectories (``tests/test_essential_dynamics.py``) before any run's forms were
  looked at, and are the same for every run and profile.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks, savgol_filter

__all__ = [
    "TrajectoryPCA", "Cusp", "Form", "EssentialDynamics", "fit_pca", "smooth_trajectory", "smooth_in_log_step",
    "curvature", "osculating_circles", "evolute_cusps", "find_forms", "essential_dynamics",
    "forms_against_boundaries", "turning_profile", "BANDWIDTH_DECADES", "GRID_PER_BANDWIDTH", "ARM_DECADES", "MIN_TURN_DEGREES",
    "MIN_SNR", "CUSP_PROMINENCE",
]

log = logging.getLogger(__name__)

# The ED settings of every notebook, chosen once (module docstring): do not tune them per run.
BANDWIDTH_DECADES = 0.1  # Gaussian kernel of the local-linear fit, in decades of step + 1
GRID_PER_BANDWIDTH = 4  # grid points per bandwidth (the curve's sampling after smoothing)
ARM_DECADES = 0.3  # chords from a turning point to the curve this far before and after it (a factor 2)
MIN_TURN_DEGREES = 30.0  # the two chords' least angle at a vertex
MIN_SNR = 10.0  # each chord's least length, in standard errors of the smoothed curve there
CUSP_PROMINENCE = 0.5  # least prominence of the |κ| maximum, in ln|κ|


@dataclass(frozen=True)
class TrajectoryPCA:
    """Fitted PCA of stacked outputs; ``project`` places any outputs (other checkpoints, other
    runs, ideal predictors such as ridge or dMMSE) in the same PC coordinates without refitting."""

    mean: np.ndarray  # [n_features]
    components: np.ndarray  # [n_components, n_features], orthonormal rows
    explained_variance_ratio: np.ndarray  # [n_components]

    def project(self, outputs) -> np.ndarray:
        """PC scores of ``outputs`` [n, ...] (each row flattened), shape [n, n_components]."""
        flat = _flatten(outputs, self.mean.shape[0])
        return (flat - self.mean) @ self.components.T

    def lift(self, scores) -> np.ndarray:
        """Back to output space: mean + scores @ components, shape [n, n_features]."""
        return self.mean + np.atleast_2d(scores) @ self.components


@dataclass(frozen=True)
class Cusp:
    """A cusp of the evolute of γ_{ij}, i.e. a vertex of γ_{ij} (a local extremum of κ)."""

    pair: tuple[int, int]
    index: int  # checkpoint index
    step: float
    point: np.ndarray  # γ_{ij} at the vertex
    centre: np.ndarray  # osculating centre there = the cusp on the evolute
    curvature: float
    kind: str  # "max" (turning point, accentuated circles) or "min" of |κ|
    turn: float = float("nan")  # angle between the chords into and out of the vertex (degrees)
    snr: float = float("nan")  # the shorter chord over the curve's standard error there


@dataclass(frozen=True)
class Form:
    """A time at which every plane projection has a cusp (Def. in §3.2.1 of [DL])."""

    step: float
    index: int
    cusps: tuple[Cusp, ...]
    point: np.ndarray  # location in PC space: each PC coordinate averaged over the pairs using it
    turn: float = float("nan")  # the trajectory's turn there in the space of all its PCs (degrees)
    snr: float = float("nan")  # its shorter chord there over the trajectory's standard error


@dataclass(frozen=True)
class EssentialDynamics:
    """ED of one run. ``steps`` / ``scores``: the checkpoints and their raw PC scores;
    ``grid_steps`` / ``smoothed``: the developmental trajectory γ (on a uniform grid in log step,
    or at the checkpoints for ``parametrisation="index"``), ``noise`` its standard error per PC
    (None when not estimated); ``settings``: what was used, for the record."""

    steps: np.ndarray
    pca: TrajectoryPCA
    scores: np.ndarray  # raw PC scores [n_checkpoints, n_components]
    smoothed: np.ndarray  # the developmental trajectory γ [n_grid, n_components]
    cusps: dict  # (i, j) -> tuple[Cusp, ...]
    forms: tuple[Form, ...]
    grid_steps: np.ndarray | None = None  # steps of the rows of ``smoothed`` (None: ``steps``)
    noise: np.ndarray | None = None  # standard error of ``smoothed`` [n_grid, n_components]
    settings: dict | None = None

    @property
    def trajectory_steps(self) -> np.ndarray:
        """The step of each row of ``smoothed``."""
        return self.steps if self.grid_steps is None else self.grid_steps


def fit_pca(outputs, n_components: int = 3) -> TrajectoryPCA:
    """PCA of outputs stacked over checkpoints: an array [n_checkpoints, ...], or a list of them
    (several runs, fitted on their union so that all runs share one set of PCs)."""
    runs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    data = np.concatenate([_flatten(r) for r in runs])
    if not np.all(np.isfinite(data)):
        raise ValueError("outputs contain NaN/inf")
    if not 1 <= n_components <= min(data.shape):
        raise ValueError(f"n_components must be in [1, {min(data.shape)}], got {n_components}")
    mean = data.mean(axis=0)
    _, s, vt = np.linalg.svd(data - mean, full_matrices=False)
    # a sign convention so that reruns give the same picture: largest loading of each PC positive
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    vt = vt * signs[:, None]
    evr = s**2 / max(np.sum(s**2), np.finfo(float).tiny)
    log.info("PCA explained variance of the top %d PCs: %s", n_components, np.round(evr[:n_components], 3).tolist())
    return TrajectoryPCA(mean=mean, components=vt[:n_components], explained_variance_ratio=evr[:n_components])


def smooth_trajectory(points, sigma: float = 3.0, method: str = "gaussian", window: int = 11,
                      polyorder: int = 3) -> np.ndarray:
    """Smooth a trajectory [T, k] along training (axis 0), in units of checkpoints.

    ``method="gaussian"``: Gaussian filter of std ``sigma`` checkpoints (edges: nearest value);
    ``method="savgol"``: Savitzky–Golay filter with ``window`` and ``polyorder``; ``sigma=0``: none.
    """
    points = np.asarray(points, dtype=float)
    if method == "gaussian":
        return gaussian_filter1d(points, sigma, axis=0, mode="nearest") if sigma > 0 else points.copy()
    if method == "savgol":
        return savgol_filter(points, window, polyorder, axis=0, mode="interp")
    raise ValueError(f"method must be 'gaussian' or 'savgol', got {method!r}")


def smooth_in_log_step(steps, points, bandwidth: float = BANDWIDTH_DECADES,
                       grid_per_bandwidth: int = GRID_PER_BANDWIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local-linear Gaussian-kernel fit of ``points`` [T, k] against u = log10(step + 1), evaluated
    on a uniform grid of u from the first to the last checkpoint.

    Returns ``(grid_steps, fitted [G, k], standard_error [G, k])``. The fit at each grid point is a
    weighted sum of the checkpoints' points whose weights sum to 1; its standard error is the noise
    of each coordinate (1.4826 × the median absolute residual of the fit at the checkpoints:
    robust to the few checkpoints where the smoother lags a fast move) times the weights' norm.
    Dense checkpoints are averaged (small error), sparse ones interpolated (error ≈ the noise).
    """
    steps = np.asarray(steps, dtype=float)
    points = np.asarray(points, dtype=float)
    if points.ndim == 1:
        points = points[:, None]
    if len(steps) != len(points) or len(steps) < 5:
        raise ValueError(f"steps and points must have the same length >= 5, got {len(steps)} and {len(points)}")
    if np.any(steps < 0) or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be >= 0 and strictly increasing")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 decades, got {bandwidth}")
    if not isinstance(grid_per_bandwidth, int) or grid_per_bandwidth < 1:
        raise ValueError(f"grid_per_bandwidth must be an integer >= 1, got {grid_per_bandwidth!r}")
    u = np.log10(steps + 1.0)
    n_grid = max(5, int(np.ceil((u[-1] - u[0]) / bandwidth * grid_per_bandwidth)) + 1)
    grid = np.linspace(u[0], u[-1], n_grid)

    def weights(at):
        d = u[None, :] - at[:, None]
        w = np.exp(-0.5 * (d / bandwidth) ** 2)
        s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
        det = s0 * s2 - s1**2
        # one checkpoint within reach: the local-linear fit degenerates to a local mean
        det = np.where(det > 1e-12 * s0 * np.maximum(s2, 1e-300), det, np.inf)
        lin = w * (s2[:, None] - s1[:, None] * d) / det[:, None]
        mean = w / s0[:, None]
        return np.where(np.isfinite(det)[:, None], lin, mean)

    l_grid = weights(grid)
    fitted = l_grid @ points
    residual = points - weights(u) @ points
    noise = 1.4826 * np.median(np.abs(residual - np.median(residual, axis=0)), axis=0)
    se = np.linalg.norm(l_grid, axis=1)[:, None] * noise[None, :]
    return 10.0**grid - 1.0, fitted, se


def curvature(curve) -> np.ndarray:
    """Signed curvature κ = (x'y'' − y'x'') / (x'² + y'²)^{3/2} of a plane curve [T, 2].

    Derivatives are central differences w.r.t. the sample index; κ does not depend on the
    parametrisation, so non-uniform checkpoints are fine as long as the curve is smooth in index.
    """
    curve = np.asarray(curve, dtype=float)
    if curve.ndim != 2 or curve.shape[1] != 2 or len(curve) < 5:
        raise ValueError(f"curve must be [T >= 5, 2], got shape {curve.shape}")
    d1 = np.gradient(curve, axis=0)
    d2 = np.gradient(d1, axis=0)
    speed2 = np.sum(d1**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / speed2**1.5


def osculating_circles(curve):
    """Centres (the evolute), radii 1/|κ| and signed curvature κ of a plane curve [T, 2]."""
    curve = np.asarray(curve, dtype=float)
    kappa = curvature(curve)
    d1 = np.gradient(curve, axis=0)
    tangent = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)  # left normal: centre side when κ > 0
    with np.errstate(divide="ignore"):
        centres = curve + normal / kappa[:, None]
        radii = 1.0 / np.abs(kappa)
    return centres, radii, kappa


def evolute_cusps(curve, steps=None, *, prominence: float = CUSP_PROMINENCE, max_radius: float = 2.0, edge: int = 3,
                  include_minima: bool = True, pair: tuple[int, int] = (0, 1), arm: int = 0, min_turn: float = 0.0,
                  noise=None, min_snr: float = 0.0) -> tuple[Cusp, ...]:
    """Cusps of the evolute of a plane curve [T, 2]: local extrema of |κ| (vertices of the curve).

    Args:
        prominence: required prominence of the extremum in log|κ| (0.5 ≈ |κ| changing by a factor
            1.65 on both sides), so that a circle arc or a gently bending curve has none.
        max_radius: largest osculating radius at a cusp, as a multiple of the curve's extent
            (largest coordinate range); on nearly straight stretches κ ≈ 0 and its relative
            wiggles are noise, with the evolute far away: those are not turning points.
        edge: checkpoints ignored at each end (smoothing and differences are one-sided there).
        include_minima: also report minima of |κ| (the other kind of vertex); minima next to a sign
            change of κ are inflections, where the evolute runs off to infinity, and are skipped.
        arm: samples from the vertex to the ends of the chords into and out of it (0: no chord
            tests). With ``arm``, a vertex needs the chords to make an angle >= ``min_turn``
            degrees (the curve turns there), and, given ``noise`` (the curve's standard error
            [T, 2]), each chord to be >= ``min_snr`` standard errors long (it moved, not jittered).
    """
    curve = np.asarray(curve, dtype=float)
    steps = np.arange(len(curve), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    if not isinstance(arm, int) or arm < 0:
        raise ValueError(f"arm must be an integer >= 0, got {arm!r}")
    if noise is not None:
        noise = np.asarray(noise, dtype=float)
        if noise.shape != curve.shape:
            raise ValueError(f"noise must have the curve's shape {curve.shape}, got {noise.shape}")
    centres, radii, kappa = osculating_circles(curve)
    too_flat = radii > max_radius * np.ptp(curve, axis=0).max()
    # the edges are cut before peak finding: their one-sided differences would lend prominence
    # to any interior point (even on a circle)
    inner = slice(edge, len(curve) - edge)
    logk = np.log(np.abs(kappa[inner]) + 1e-300)
    found = [(i + edge, "max") for i in find_peaks(logk, prominence=prominence)[0]]
    if include_minima:
        sign_change = np.flatnonzero(np.diff(np.sign(kappa)) != 0)
        for i in find_peaks(-logk, prominence=prominence)[0] + edge:
            if not np.any(np.abs(sign_change - i) <= 1) and np.isfinite(centres[i]).all():
                found.append((i, "min"))
    cusps = []
    for i, kind in sorted(found):
        if too_flat[i]:
            continue
        ok, turn, snr = _chord_test(curve, i, arm, noise, min_turn, min_snr)
        if not ok:
            continue
        cusps.append(Cusp(pair=pair, index=int(i), step=float(steps[i]), point=curve[i].copy(),
                          centre=centres[i].copy(), curvature=float(kappa[i]), kind=kind, turn=turn, snr=snr))
    return tuple(cusps)


def _chord_test(curve, i: int, arm: int, noise, min_turn: float, min_snr: float) -> tuple[bool, float, float]:
    """(passes, turn in degrees, snr) of the chords from ``curve[i - arm]`` to ``curve[i]`` and on to
    ``curve[i + arm]`` (cut at the ends), in however many dimensions ``curve`` has; ``arm = 0``
    passes without testing (nan, nan)."""
    if not arm:
        return True, float("nan"), float("nan")
    into = curve[i] - curve[max(i - arm, 0)]
    out = curve[min(i + arm, len(curve) - 1)] - curve[i]
    lengths = np.linalg.norm(into), np.linalg.norm(out)
    if min(lengths) == 0:
        return False, float("nan"), 0.0
    turn = float(np.degrees(np.arccos(np.clip(into @ out / (lengths[0] * lengths[1]), -1.0, 1.0))))
    snr = float("nan") if noise is None else float(min(lengths) / max(np.linalg.norm(noise[i]), 1e-300))
    return turn >= min_turn and (noise is None or snr >= min_snr), turn, snr


def find_forms(trajectory, steps, *, pairs=None, window: int = 3, **cusp_kwargs) -> tuple[dict, tuple[Form, ...]]:
    """Cusps of every plane projection γ_{ij} and the forms. Returns (cusps by pair, forms).

    ``cusp_kwargs`` go to :func:`evolute_cusps`. Without chord tests (``arm = 0``, the default) a
    form is a sample where every pair has a cusp within ``window`` samples of the first pair's.
    With ``arm`` > 0 (and ``min_turn``, ``noise`` [T, k], ``min_snr``) a form is a turning point
    of the trajectory itself, in all k PCs: a local maximum of the angle between the chords
    ``arm`` samples into and out of it, that passes the chord tests, at which every plane has a
    vertex (an |κ| extremum, tests aside) within ``window`` samples. The turn is one event of the
    whole trajectory: a faint PC shows it with a small angle or a low signal in some planes, and
    the planes' vertices scatter around it. Each pair's reported cusps are the vertices that pass
    the chord tests in their own plane (what the figure marks).
    """
    trajectory = np.asarray(trajectory, dtype=float)
    k = trajectory.shape[1]
    pairs = list(itertools.combinations(range(k), 2)) if pairs is None else [tuple(p) for p in pairs]
    noise = cusp_kwargs.pop("noise", None)
    noise = None if noise is None else np.asarray(noise, dtype=float)
    tests = {name: cusp_kwargs.pop(name) for name in ("arm", "min_turn", "min_snr") if name in cusp_kwargs}
    arm, min_turn, min_snr = tests.get("arm", 0), tests.get("min_turn", 0.0), tests.get("min_snr", 0.0)

    def pair_cusps(p, tested):
        extra = {"arm": arm, "min_turn": min_turn, "min_snr": min_snr,
                 "noise": None if noise is None else noise[:, list(p)]} if tested else {}
        return evolute_cusps(trajectory[:, list(p)], steps, pair=p, **cusp_kwargs, **extra)

    cusps = {p: pair_cusps(p, tested=True) for p in pairs}
    steps = np.asarray(steps, dtype=float)

    def form_at(index, anchor_cusps, turn=float("nan"), snr=float("nan")):
        hits = []
        for p in pairs:
            near = [c for c in anchor_cusps[p] if abs(c.index - index) <= window]
            if not near:
                return None
            hits.append(min(near, key=lambda c: abs(c.index - index)))
        point, counts = np.zeros(k), np.zeros(k)
        for c in hits:
            point[list(c.pair)] += c.centre
            counts[list(c.pair)] += 1
        return Form(step=float(steps[index]), index=int(index), cusps=tuple(hits),
                    point=np.where(counts > 0, point / np.maximum(counts, 1), np.nan), turn=turn, snr=snr)

    forms = []
    if arm:
        # the trajectory's turning points in all k PCs: local maxima of the chord angle, full
        # chords only, that pass the tests; then every plane needs a vertex near it
        candidates = {p: pair_cusps(p, tested=False) for p in pairs}
        inner = np.arange(arm, len(trajectory) - arm)
        tested = [_chord_test(trajectory, i, arm, noise, min_turn, min_snr) for i in inner]
        turns = np.array([t for _, t, _ in tested])
        for j in find_peaks(np.r_[-np.inf, np.nan_to_num(turns, nan=-np.inf), -np.inf], distance=arm)[0] - 1:
            ok, turn, snr = tested[j]
            form = form_at(inner[j], candidates, turn, snr) if ok else None
            if form is not None:
                forms.append(form)
        return cusps, tuple(forms)
    used: set[int] = set()
    for anchor in cusps[pairs[0]]:
        form = form_at(anchor.index, cusps)
        if form is None:
            continue
        index = int(round(np.median([c.index for c in form.cusps])))
        if index in used:
            continue
        used.add(index)
        forms.append(Form(step=float(steps[index]), index=index, cusps=form.cusps, point=form.point))
    return cusps, tuple(forms)


def essential_dynamics(outputs, steps, *, n_components: int = 3, pca: TrajectoryPCA | None = None,
                       parametrisation: str = "log_step", bandwidth: float = BANDWIDTH_DECADES,
                       sigma: float = 3.0, method: str = "gaussian", window: int | None = None,
                       **cusp_kwargs) -> EssentialDynamics:
    """ED of one run: PCA (or a given, e.g. jointly fitted, ``pca``), smoothed trajectory, cusps, forms.

    ``outputs``: [n_checkpoints, ...] model outputs on a fixed input set (flattened per checkpoint).

    ``parametrisation="log_step"`` (the notebooks'; module docstring): :func:`smooth_in_log_step`
    with ``bandwidth`` decades; forms are turning points by >= :data:`MIN_TURN_DEGREES` over
    :data:`ARM_DECADES` with chords >= :data:`MIN_SNR` standard errors and a vertex (|κ| maximum)
    in every plane within ``window`` grid samples (default: the arm). ``parametrisation="index"``: the
    checkpoints as they come, smoothed by ``sigma`` checkpoints (``method`` as in
    :func:`smooth_trajectory`), every |κ| extremum a vertex, ``window`` default 3 checkpoints.
    ``cusp_kwargs`` override :func:`evolute_cusps`' settings in either case.
    """
    steps = np.asarray(steps, dtype=float)
    flat = _flatten(outputs)
    if len(flat) != len(steps):
        raise ValueError(f"outputs and steps must have the same length, got {len(flat)} and {len(steps)}")
    pca = fit_pca(flat, n_components) if pca is None else pca
    scores = pca.project(flat)
    if parametrisation == "log_step":
        grid_steps, smoothed, noise = smooth_in_log_step(steps, scores, bandwidth)
        per = GRID_PER_BANDWIDTH
        cusp_kwargs = {"arm": max(1, int(round(ARM_DECADES / bandwidth * per))), "min_turn": MIN_TURN_DEGREES,
                       "min_snr": MIN_SNR, "include_minima": False, "edge": per, **cusp_kwargs}
        window = cusp_kwargs["arm"] if window is None else window
        cusps, forms = find_forms(smoothed, grid_steps, window=window, noise=noise, **cusp_kwargs)
        settings = {"parametrisation": parametrisation, "bandwidth_decades": bandwidth, "grid_per_bandwidth": per,
                    "window_samples": window, **{k: v for k, v in cusp_kwargs.items()}}
    elif parametrisation == "index":
        grid_steps, noise = None, None
        smoothed = smooth_trajectory(scores, sigma=sigma, method=method)
        window = 3 if window is None else window
        cusps, forms = find_forms(smoothed, steps, window=window, **cusp_kwargs)
        settings = {"parametrisation": parametrisation, "sigma": sigma, "method": method, "window_samples": window,
                    **cusp_kwargs}
    else:
        raise ValueError(f"parametrisation must be 'log_step' or 'index', got {parametrisation!r}")
    log.info("essential dynamics: %d forms at steps %s", len(forms), [round(f.step) for f in forms])
    return EssentialDynamics(steps=steps, pca=pca, scores=scores, smoothed=smoothed, cusps=cusps, forms=forms,
                             grid_steps=grid_steps, noise=noise, settings=settings)


def turning_profile(ed: EssentialDynamics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, turn in degrees, snr) of the chord test along the whole trajectory of a log-step
    :class:`EssentialDynamics` (samples with full chords only): what its forms are the passing
    local maxima of."""
    arm = (ed.settings or {}).get("arm")
    if not arm:
        raise ValueError("turning_profile needs an EssentialDynamics with chord tests (parametrisation='log_step')")
    inner = np.arange(arm, len(ed.smoothed) - arm)
    tested = [_chord_test(ed.smoothed, i, arm, ed.noise, 0.0, 0.0) for i in inner]
    return ed.trajectory_steps[inner], np.array([t for _, t, _ in tested]), np.array([r for _, _, r in tested])


def forms_against_boundaries(form_steps, boundaries, factor: float = 1.5) -> list[dict]:
    """Which LLC boundaries a form corroborates: for each boundary (in order), the nearest form in
    log step and whether it lies within ``factor`` of it (|log(form / boundary)| <= log factor,
    notebook 05's rule for curvature boundaries). One dict per boundary: ``boundary``,
    ``nearest_form`` (None without forms), ``ratio`` (form / boundary), ``corroborated``."""
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    forms = np.asarray([f for f in form_steps if f > 0], dtype=float)
    rows = []
    for b in boundaries:
        if not b > 0:
            raise ValueError(f"boundaries must be > 0 steps, got {b}")
        if len(forms) == 0:
            rows.append({"boundary": float(b), "nearest_form": None, "ratio": None, "corroborated": False})
            continue
        nearest = float(forms[np.argmin(np.abs(np.log(forms / b)))])
        rows.append({"boundary": float(b), "nearest_form": nearest, "ratio": nearest / b,
                     "corroborated": bool(abs(np.log(nearest / b)) <= np.log(factor))})
    return rows


def _flatten(outputs, n_features: int | None = None) -> np.ndarray:
    if hasattr(outputs, "detach"):  # a torch tensor
        outputs = outputs.detach().cpu().numpy()
    arr = np.asarray(outputs, dtype=float)
    flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr[None, :]
    if n_features is not None and flat.shape[1] != n_features:
        raise ValueError(f"outputs have {flat.shape[1]} features per row, the PCA was fitted on {n_features}")
    return flat
