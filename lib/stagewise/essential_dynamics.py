"""Essential dynamics: PCA of model outputs over training and the geometry of the trajectory.

[T] "The Developmental Landscape of In-Context Learning", §3.2 and Fig. 2; [E] the post's Fig. 9:

* a_t = (f_{w_t}(x_i))_{i=1..n} ∈ ℝ^{mn}, the outputs on a fixed input set at checkpoint t (eq. 7 of [T]);
  the checkpoints' a_t are stacked and PCA is fitted (jointly over several runs: on their union);
* the developmental trajectory γ is the projection onto the top PCs, smoothed along training;
* for each plane projection γ_{ij} (a pair of PCs): osculating circles (radius 1/|κ|), their
  centres (the evolute), and the evolute's cusps = vertices of γ_{ij} = local extrema of the
  curvature κ (Bruce & Giblin 1992, Prop. 7.2); a cusp singularity of γ_{ij} shows up as a spike of κ;
* a *form* is a time at which every plane projection has such a cusp; it is located in PC space
  (and lifted to output space) from the osculating centres there.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks, savgol_filter

__all__ = [
    "TrajectoryPCA", "Cusp", "Form", "EssentialDynamics", "fit_pca", "smooth_trajectory",
    "curvature", "osculating_circles", "evolute_cusps", "find_forms", "essential_dynamics",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Form:
    """A time at which every plane projection has a cusp (Def. in §3.2.1 of [T])."""

    step: float
    index: int
    cusps: tuple[Cusp, ...]
    point: np.ndarray  # location in PC space: each PC coordinate averaged over the pairs using it


@dataclass(frozen=True)
class EssentialDynamics:
    steps: np.ndarray
    pca: TrajectoryPCA
    scores: np.ndarray  # raw PC scores [n_checkpoints, n_components]
    smoothed: np.ndarray  # the developmental trajectory γ [n_checkpoints, n_components]
    cusps: dict  # (i, j) -> tuple[Cusp, ...]
    forms: tuple[Form, ...]


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


def evolute_cusps(curve, steps=None, *, prominence: float = 0.5, max_radius: float = 2.0, edge: int = 3,
                  include_minima: bool = True, pair: tuple[int, int] = (0, 1)) -> tuple[Cusp, ...]:
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
    """
    curve = np.asarray(curve, dtype=float)
    steps = np.arange(len(curve), dtype=float) if steps is None else np.asarray(steps, dtype=float)
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
    return tuple(
        Cusp(pair=pair, index=int(i), step=float(steps[i]), point=curve[i].copy(), centre=centres[i].copy(),
             curvature=float(kappa[i]), kind=kind)
        for i, kind in sorted(found)
        if not too_flat[i]
    )


def find_forms(trajectory, steps, *, pairs=None, window: int = 3, **cusp_kwargs) -> tuple[dict, tuple[Form, ...]]:
    """Cusps of every plane projection γ_{ij} and the forms: checkpoints where all pairs have a
    cusp within ``window`` checkpoints of each other. Returns (cusps by pair, forms)."""
    trajectory = np.asarray(trajectory, dtype=float)
    k = trajectory.shape[1]
    pairs = list(itertools.combinations(range(k), 2)) if pairs is None else [tuple(p) for p in pairs]
    cusps = {p: evolute_cusps(trajectory[:, list(p)], steps, pair=p, **cusp_kwargs) for p in pairs}
    forms, used = [], set()
    for anchor in cusps[pairs[0]]:
        hits = []
        for p in pairs:
            near = [c for c in cusps[p] if abs(c.index - anchor.index) <= window]
            if not near:
                break
            hits.append(min(near, key=lambda c: abs(c.index - anchor.index)))
        if len(hits) < len(pairs) or anchor.index in used:
            continue
        used.add(anchor.index)
        point = np.zeros(k)
        counts = np.zeros(k)
        for c in hits:
            point[list(c.pair)] += c.centre
            counts[list(c.pair)] += 1
        index = int(round(np.median([c.index for c in hits])))
        forms.append(Form(step=float(np.asarray(steps)[index]), index=index, cusps=tuple(hits),
                          point=np.where(counts > 0, point / np.maximum(counts, 1), np.nan)))
    return cusps, tuple(forms)


def essential_dynamics(outputs, steps, *, n_components: int = 3, pca: TrajectoryPCA | None = None,
                       sigma: float = 3.0, method: str = "gaussian", window: int = 3,
                       **cusp_kwargs) -> EssentialDynamics:
    """ED of one run: PCA (or a given, e.g. jointly fitted, ``pca``), smoothed trajectory, cusps, forms.

    ``outputs``: [n_checkpoints, ...] model outputs on a fixed input set (flattened per checkpoint).
    """
    steps = np.asarray(steps, dtype=float)
    flat = _flatten(outputs)
    if len(flat) != len(steps):
        raise ValueError(f"outputs and steps must have the same length, got {len(flat)} and {len(steps)}")
    pca = fit_pca(flat, n_components) if pca is None else pca
    scores = pca.project(flat)
    smoothed = smooth_trajectory(scores, sigma=sigma, method=method)
    cusps, forms = find_forms(smoothed, steps, window=window, **cusp_kwargs)
    log.info("essential dynamics: %d forms at steps %s", len(forms), [round(f.step) for f in forms])
    return EssentialDynamics(steps=steps, pca=pca, scores=scores, smoothed=smoothed, cusps=cusps, forms=forms)


def _flatten(outputs, n_features: int | None = None) -> np.ndarray:
    if hasattr(outputs, "detach"):  # a torch tensor
        outputs = outputs.detach().cpu().numpy()
    arr = np.asarray(outputs, dtype=float)
    flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr[None, :]
    if n_features is not None and flat.shape[1] != n_features:
        raise ValueError(f"outputs have {flat.shape[1]} features per row, the PCA was fitted on {n_features}")
    return flat
