"""Developmental stages from a curve over training (main paper §4 and App. A.5).

The paper's procedure, step by step:

1. lightly smooth the LLC curve λ̂(w_t) with a Gaussian process (GP) on x = log(t + 1);
2. differentiate the GP mean with respect to log t (analytic here, from the RBF kernel);
3. **boundary rule** (:func:`boundary_positions`): a stage boundary is a plateau, |slope| below a
   tolerance, between two periods of change; it sits where the slope changes sign (a max / min of
   λ̂) or, between two changes of the same sign, at the local minimum of |slope| (App. A.5: "we
   additionally require that the plateau be at a local minimum of the absolute first derivative");
4. each stage between two boundaries is labelled by the sign of its change in λ̂: "increase"
   (type A, orange in Fig. 1) or "decrease" (type B, blue).

Uncertainty (not in the paper): the same rule is applied to posterior samples of the GP slope;
each boundary gets the spread of the nearest sampled boundaries and the fraction of samples that
have one nearby (``support``), so a reader sees which boundaries are solid.

Every choice that App. A.5 calls out (log t vs t, smoothing, tolerance, and a minimum stage length)
is a keyword argument of :func:`detect_stages` with the default that recovers the papers' boundaries
on curves shaped like theirs (``benchmarks/stage_detection_accuracy.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

__all__ = ["Stage", "StageResult", "detect_stages", "boundary_positions", "synthetic_stage_curve", "slope_dips"]

log = logging.getLogger(__name__)

MIN_CHECKPOINTS = 8


@dataclass(frozen=True)
class Stage:
    """One developmental stage: [start, end] in steps, LLC direction, duration in steps, Δλ̂."""

    start: float
    end: float
    direction: str  # "increase" (type A) or "decrease" (type B)
    duration: float
    delta: float  # change of the smoothed curve over the stage (Δλ̂ in Tables 1–2 of [DL])


@dataclass(frozen=True)
class StageResult:
    """Output of :func:`detect_stages`. Arrays over checkpoints unless said otherwise."""

    steps: np.ndarray
    smoothed: np.ndarray  # GP posterior mean of the curve
    smoothed_std: np.ndarray  # GP posterior std of the (noise-free) curve
    slope: np.ndarray  # d mean / d log(t + offset) (or d/dt when log_time=False)
    slope_std: np.ndarray  # posterior std of the slope
    boundaries: np.ndarray  # detected boundary steps, increasing
    intervals: np.ndarray  # [n_boundaries, 2]: central `interval` range of sampled boundary steps
    support: np.ndarray  # per boundary: fraction of posterior samples with a boundary nearby
    stages: tuple[Stage, ...]
    tolerance: float  # absolute |slope| tolerance that was applied
    length_scale: float  # GP RBF length scale in x units (log-steps by default)
    noise_std: float  # fitted white-noise std, in curve units
    log_time: bool
    offset: float

    def to_x(self, steps) -> np.ndarray:
        """Map steps to the GP's time axis x (log(t + offset) or t)."""
        steps = np.asarray(steps, dtype=float)
        return np.log(steps + self.offset) if self.log_time else steps

    def summary(self):
        """A pandas table in the style of Tables 1–2 of [DL]: stage, start, end, type, Δλ̂."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"stage": i + 1, "start": s.start, "end": s.end, "direction": s.direction,
                 "type": "A" if s.direction == "increase" else "B", "delta": s.delta}
                for i, s in enumerate(self.stages)
            ]
        )


def detect_stages(
    steps,
    values,
    stds=None,
    *,
    log_time: bool = True,
    offset: float = 1.0,
    length_scale: float | None = None,
    length_scale_bounds: tuple[float, float] = (0.15, 3.0),
    tolerance: float = 0.1,
    absolute_tolerance: float | None = None,
    significance: float = 2.0,
    min_stage_length: float = 0.15,
    edge_plateaus: bool = False,
    n_samples: int = 200,
    interval: float = 0.9,
    seed: int = 0,
) -> StageResult:
    """Stage boundaries of a curve over training, App. A.5 of the main paper.

    Args:
        steps: checkpoint steps, strictly increasing, >= 0 (at least 8 of them).
        values: the curve at those steps (e.g. λ̂(w_t)); finite.
        stds: optional standard errors of ``values`` (e.g. chain std / sqrt(n_chains)); they enter
            the GP as known per-point noise, on top of the fitted white noise.
        log_time: smooth and differentiate in x = log(t + offset) (default, as the paper: "the
            logarithm corrects for the fact that the LLC, like the loss, changes less as training
            progresses") or in x = t.
        offset: the shift in log(t + offset), so that step 0 is allowed.
        length_scale: GP RBF length scale in x units; ``None`` (default) fits it by maximum marginal
            likelihood within ``length_scale_bounds``.
        length_scale_bounds: bounds of the fitted length scale, in x units. The lower bound 0.15
            (≈ a factor 1.16 in steps) is the "light smoothing": it still resolves the paper's
            shortest stage (LM3, 6.5k–8.5k, 0.27 in log t) but stops the GP from chasing noise.
        tolerance: |slope| tolerance as a fraction of the largest |slope| over the interior
            checkpoints (App. A.5's "tolerance"; scale-free so it works for any curve's units).
        absolute_tolerance: if given, the tolerance in slope units, replacing ``tolerance``.
        significance: a period of change also needs |slope| > ``significance`` × the posterior
            std of the slope, so that noise wiggles where checkpoints are sparse or noisy (the
            first log-spaced checkpoints, the ends) are not read as stages. Not in the paper; set
            0 for the bare App. A.5 rule.
        min_stage_length: shortest stage kept, in x units (0.15 ≈ a factor 1.16 in steps); of
            the two boundaries of a shorter stage, the one with the larger |slope| is dropped, and
            no boundary lies closer than this to the first or last checkpoint.
        edge_plateaus: if True, a flat stretch (|slope| below the tolerance) at least
            ``min_stage_length`` long before the first period of change is a stage of its own, ending
            where the change starts (and likewise after the last period). Off by default: the
            paper's rule puts boundaries *between* changes; on curves whose LLC is flat at the start
            of training (the regression model before its task-prior stage ends) turning it on marks
            that onset.
        n_samples: GP posterior samples of the slope used for the boundary intervals (0: none).
        interval: central probability mass of the reported boundary intervals.
        seed: seed of the posterior samples.
    """
    steps, values, stds = _validate(steps, values, stds, offset, log_time)
    x = np.log(steps + offset) if log_time else steps
    gp = _fit_gp(x, values, stds, length_scale, length_scale_bounds)

    interior = slice(1, len(x) - 1)
    tol = absolute_tolerance if absolute_tolerance is not None else tolerance * np.max(np.abs(gp.slope[interior]))
    # a period of change must also be distinguishable from zero under the GP posterior
    threshold = np.maximum(tol, significance * gp.slope_std)
    bx = boundary_positions(x, gp.slope, threshold, min_stage_length, edge_plateaus)

    intervals = np.full((len(bx), 2), np.nan)
    support = np.full(len(bx), np.nan)
    if n_samples > 0 and len(bx) > 0:
        rng = np.random.default_rng(seed)
        samples = gp.sample_slopes(rng, n_samples)
        sampled = [boundary_positions(x, s, threshold, min_stage_length, edge_plateaus) for s in samples]
        intervals, support = _boundary_intervals(bx, sampled, interval, x[0], x[-1])
    to_steps = (lambda z: np.exp(z) - offset) if log_time else (lambda z: np.asarray(z, dtype=float))

    boundaries = to_steps(bx)
    stages = _stages(steps, x, gp.mean, np.concatenate([[x[0]], bx, [x[-1]]]), to_steps)
    log.info("detected %d boundaries at steps %s (tolerance %.3g, length scale %.3g)",
             len(boundaries), np.round(boundaries).astype(int).tolist(), tol, gp.length_scale)
    return StageResult(
        steps=steps, smoothed=gp.mean, smoothed_std=gp.mean_std, slope=gp.slope, slope_std=gp.slope_std,
        boundaries=boundaries, intervals=to_steps(intervals), support=support, stages=stages,
        tolerance=float(tol), length_scale=gp.length_scale, noise_std=gp.noise_std,
        log_time=log_time, offset=offset,
    )


def boundary_positions(x, slope, tolerance, min_stage_length: float = 0.0, edge_plateaus: bool = False) -> np.ndarray:
    """The boundary rule of App. A.5 on a slope sampled at increasing ``x``; returns boundary x's.

    ``tolerance`` is a number or one per checkpoint. A *period of change* is a run of checkpoints
    with |slope| >= ``tolerance``; between two
    consecutive periods lies a plateau (|slope| < tolerance), and its boundary is

    * the zero crossing of the slope, if the two periods have opposite signs (a max / min of λ̂);
    * the checkpoint where |slope| is smallest, if they have the same sign (a saddle-like plateau).

    On a clean curve this is exactly "local minima of |slope| below the tolerance, plus sign
    changes"; on a noisy one, a plateau holds one boundary however often noise wiggles the slope
    across zero inside it, and flat stretches before the first / after the last period of change
    hold none — unless ``edge_plateaus``: then a flat stretch of at least ``min_stage_length``
    before the first (after the last) period of change ends (starts) a stage where the change
    begins (ends). The end checkpoints are ignored (their GP slope is one-sided).
    """
    x_first, x_last = float(x[0]), float(x[-1])
    x, slope = np.asarray(x, dtype=float)[1:-1], np.asarray(slope, dtype=float)[1:-1]
    active = np.abs(slope) >= np.broadcast_to(tolerance, x.shape[0] + 2)[1:-1]
    idx = np.flatnonzero(active)
    pos = []
    for a, b in zip(idx[:-1], idx[1:]):
        if b == a + 1 and np.sign(slope[a]) == np.sign(slope[b]):
            continue  # inside one period of change
        gap = np.arange(a, b + 1)
        crossings = gap[:-1][np.sign(slope[gap[:-1]]) != np.sign(slope[gap[1:]])]
        if np.sign(slope[a]) != np.sign(slope[b]):
            i = crossings[len(crossings) // 2]  # the middle crossing if noise made several
            pos.append(x[i] - slope[i] * (x[i + 1] - x[i]) / (slope[i + 1] - slope[i]))
        else:
            pos.append(x[gap[np.argmin(np.abs(slope[gap]))]])
    if edge_plateaus and len(idx):
        first, last = idx[0], idx[-1]
        if first > 0 and x[first - 1] - x_first >= min_stage_length:
            pos.insert(0, x[first - 1])
        if last < len(x) - 1 and x_last - x[last + 1] >= min_stage_length:
            pos.append(x[last + 1])
    pos = np.asarray(pos, dtype=float)
    # the first and last stage must be as long as any other (GP slopes swing at the ends)
    pos = pos[(pos - x_first >= min_stage_length) & (x_last - pos >= min_stage_length)]
    return _merge_short_stages(pos, x, slope, min_stage_length)


def _merge_short_stages(pos, x, slope, min_len) -> np.ndarray:
    """Remove stages shorter than ``min_len``, shortest first. A short stage whose direction differs
    from both neighbours is a wiggle: both of its boundaries go. Otherwise the boundary where
    |slope| is larger (the less plateau-like one) goes."""
    pos = list(pos)
    sign_at = lambda a, b: np.sign(np.interp((a + b) / 2, x, slope))  # noqa: E731
    while len(pos) >= 2:
        gaps = np.diff(pos)
        k = int(np.argmin(gaps))
        if gaps[k] >= min_len:
            break
        edges = [x[0], *pos, x[-1]]  # stage k+1 runs from edges[k+1] to edges[k+2]
        inside = sign_at(edges[k + 1], edges[k + 2])
        if inside != sign_at(edges[k], edges[k + 1]) and inside != sign_at(edges[k + 2], edges[k + 3]):
            del pos[k : k + 2]
        else:
            del pos[k if abs(np.interp(pos[k], x, slope)) > abs(np.interp(pos[k + 1], x, slope)) else k + 1]
    return np.asarray(pos, dtype=float)


def slope_dips(result: StageResult, start: float, end: float) -> list[dict]:
    """Where the curve slows down and speeds up again inside ``[start, end]`` (steps): the local
    minima of |slope| of the GP fit at which the slope keeps its sign on both sides. A saddle
    between two decreases (the paper's LR3|LR4) is such a dip; a smooth single fall has none.

    Each dip: ``step``, ``slope`` and ``slope_std`` there (d λ̂ / d log t), and ``relative`` =
    |slope| at the dip over the largest |slope| of the window (0: the curve stops; near 1: barely
    a dip). Whether a dip is a boundary is :func:`detect_stages`' call; this only measures it.
    """
    if not start < end:
        raise ValueError(f"start must be below end, got start={start!r}, end={end!r}")
    inside = np.flatnonzero((result.steps >= start) & (result.steps <= end))
    if len(inside) < 3:
        return []
    slope = result.slope[inside]
    mag = np.abs(slope)
    peak = float(mag.max())
    dips = []
    for k in range(1, len(inside) - 1):
        left, right = mag[:k].max(), mag[k + 1:].max()
        if mag[k] <= mag[k - 1] and mag[k] < mag[k + 1] and mag[k] < left and mag[k] < right \
                and np.sign(slope[k - 1]) == np.sign(slope[k + 1]) == np.sign(slope[k]):
            i = inside[k]
            dips.append({"step": float(result.steps[i]), "slope": float(result.slope[i]),
                         "slope_std": float(result.slope_std[i]), "relative": float(mag[k] / peak) if peak else 1.0})
    return dips


def synthetic_stage_curve(steps, boundaries, deltas, *, start: float, initial: float = 0.0,
                          offset: float = 1.0) -> np.ndarray:
    """A noise-free curve with known stages, for tests and benchmarks.

    Stage i runs from b_{i-1} to b_i in x = log(t + offset) (b_{-1} = ``start``, the last stage
    ends at ``steps[-1]``) and changes the curve by ``deltas[i]`` along a raised-cosine ramp, so the
    slope is exactly zero at each boundary and positive (negative) inside increasing (decreasing)
    stages: the shape of the papers' LLC curves, with unambiguous true boundaries.
    """
    steps = np.asarray(steps, dtype=float)
    if len(deltas) != len(boundaries) + 1:
        raise ValueError(f"deltas needs one entry per stage ({len(boundaries) + 1}), got {len(deltas)}")
    edges = np.log(np.concatenate([[start], boundaries, [steps[-1]]]) + offset)
    x = np.log(steps + offset)
    out = np.full_like(x, initial)
    for lo, hi, d in zip(edges[:-1], edges[1:], deltas):
        u = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
        out += d * (u - np.sin(2 * np.pi * u) / (2 * np.pi))
    return out


# --------------------------------------------------------------------------------------------
# Gaussian process with an analytic derivative


@dataclass(frozen=True)
class _GP:
    mean: np.ndarray
    mean_std: np.ndarray
    slope: np.ndarray
    slope_std: np.ndarray
    slope_cov: np.ndarray
    length_scale: float
    noise_std: float

    def sample_slopes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        jitter = 1e-9 * np.max(np.diag(self.slope_cov)) * np.eye(len(self.slope))
        chol = np.linalg.cholesky(self.slope_cov + jitter)
        return self.slope + rng.standard_normal((n, len(self.slope))) @ chol.T


def _fit_gp(x, y, stds, length_scale, bounds) -> _GP:
    """RBF + white-noise GP on standardised y; mean, slope and slope covariance at the x's.

    scikit-learn fits the hyperparameters; the posterior of the noise-free curve and of its
    derivative are then written out (sklearn's predictive covariance would include the white noise).
    """
    import warnings

    mu, scale = float(np.mean(y)), float(np.std(y)) or 1.0
    yn = (y - mu) / scale
    known_var = np.zeros_like(y) if stds is None else (stds / scale) ** 2
    rbf = RBF(length_scale, "fixed") if length_scale is not None else RBF(np.sqrt(bounds[0] * bounds[1]), bounds)
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * rbf + WhiteKernel(1e-2, (1e-8, 1.0))
    gpr = GaussianProcessRegressor(kernel, alpha=known_var + 1e-10, normalize_y=False)
    with warnings.catch_warnings():
        # a hyperparameter at its bound is an expected outcome (e.g. length scale at the lower
        # bound = the lightest smoothing allowed), logged below rather than warned about
        warnings.simplefilter("ignore", ConvergenceWarning)
        gpr.fit(x[:, None], yn)
    amp = gpr.kernel_.k1.k1.constant_value
    ell = float(gpr.kernel_.k1.k2.length_scale)
    white = gpr.kernel_.k2.noise_level
    log.debug("GP fit: amplitude %.3g, length scale %.3g, white noise %.3g (standardised)", amp, ell, white)

    d = x[:, None] - x[None, :]
    r = np.exp(-0.5 * d**2 / ell**2)
    k_f = amp * r  # cov(f(a), f(b))
    k_df = -amp * d / ell**2 * r  # cov(f'(a), f(b))
    k_dd = amp * (1 / ell**2 - d**2 / ell**4) * r  # cov(f'(a), f'(b))
    cho = cho_factor(k_f + np.diag(white + known_var + 1e-10))
    weights = cho_solve(cho, yn)
    var_f = np.diag(k_f - k_f @ cho_solve(cho, k_f))
    cov_d = k_dd - k_df @ cho_solve(cho, k_df.T)
    cov_d = 0.5 * (cov_d + cov_d.T)
    return _GP(
        mean=mu + scale * (k_f @ weights),
        mean_std=scale * np.sqrt(np.clip(var_f, 0, None)),
        slope=scale * (k_df @ weights),
        slope_std=scale * np.sqrt(np.clip(np.diag(cov_d), 0, None)),
        slope_cov=scale**2 * cov_d,
        length_scale=ell,
        noise_std=scale * float(np.sqrt(white)),
    )


# --------------------------------------------------------------------------------------------
# helpers


def _validate(steps, values, stds, offset, log_time):
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    if steps.ndim != 1 or values.ndim != 1:
        raise ValueError(f"steps and values must be 1-D, got shapes {steps.shape} and {values.shape}")
    if len(steps) != len(values):
        raise ValueError(f"steps and values must have the same length, got {len(steps)} and {len(values)}")
    if len(steps) < MIN_CHECKPOINTS:
        raise ValueError(f"steps: need at least {MIN_CHECKPOINTS} checkpoints to detect stages, got {len(steps)}")
    if not np.all(np.isfinite(steps)) or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be finite and strictly increasing")
    if log_time and np.any(steps + offset <= 0):
        raise ValueError(f"steps + offset must be > 0 for log time, got min step {steps.min()} with offset {offset}")
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))
        raise ValueError(f"values contain NaN/inf at checkpoints {bad[:10].tolist()} (steps {steps[bad[:10]].tolist()})")
    if stds is not None:
        stds = np.asarray(stds, dtype=float)
        if stds.shape != values.shape:
            raise ValueError(f"stds must have the same shape as values, got {stds.shape} and {values.shape}")
        if not np.all(np.isfinite(stds)) or np.any(stds < 0):
            raise ValueError("stds must be finite and >= 0")
    return steps, values, stds


def _boundary_intervals(bx, sampled, interval, x_lo, x_hi):
    """For each detected boundary, the nearest sampled boundary inside its window (halfway to the
    neighbouring detected boundaries): central ``interval`` range and fraction of samples with one."""
    mids = np.concatenate([[x_lo], (bx[1:] + bx[:-1]) / 2, [x_hi]])
    q = (1 - interval) / 2
    intervals, support = np.full((len(bx), 2), np.nan), np.zeros(len(bx))
    for k, b in enumerate(bx):
        nearest = []
        for s in sampled:
            inside = s[(s >= mids[k]) & (s <= mids[k + 1])]
            if len(inside):
                nearest.append(inside[np.argmin(np.abs(inside - b))])
        support[k] = len(nearest) / len(sampled)
        if nearest:
            intervals[k] = np.quantile(nearest, [q, 1 - q])
    return intervals, support


def _stages(steps, x, mean, edges_x, to_steps) -> tuple[Stage, ...]:
    edge_values = np.interp(edges_x, x, mean)
    edge_steps = np.concatenate([[steps[0]], to_steps(edges_x[1:-1]), [steps[-1]]])
    stages = []
    for k in range(len(edges_x) - 1):
        delta = float(edge_values[k + 1] - edge_values[k])
        stages.append(Stage(start=float(edge_steps[k]), end=float(edge_steps[k + 1]),
                            direction="increase" if delta >= 0 else "decrease",
                            duration=float(edge_steps[k + 1] - edge_steps[k]), delta=delta))
    return tuple(stages)
