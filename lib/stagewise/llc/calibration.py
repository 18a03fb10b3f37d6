"""SGLD calibration (main paper App. D.3.3, Figs. D.6-D.7): is a profile's (ε, nβ, γ, budget) usable?

Following D.3.3, at a few representative checkpoints (:func:`calibration_checkpoints`: early, at
the LLC's peak, beside a boundary, late):

1. a grid over ε × nβ of short chains (:func:`calibrate_sgld`), each cell classified
   (:func:`classify_estimate`) as ``diverged`` (NaN / λ̂ > d), ``escape`` (loss below ℓ(w*)),
   ``stalled`` (still drifting or chains disagreeing: ``unconverged``, or a chain ``not_converged``)
   or ``good`` — the usable region is where cells are good at every checkpoint;
2. at the profile's own setting, one chain ``long_factor`` times longer than the profile's, whose
   first draws are the profile's chain 0 (same seed: same batches and noise), so its running
   estimate at the profile's draw count *is* the profile's chain 0; its settled value is the mean of
   its second half (past any climb away from w*). The budget is adequate when the profile's
   estimate is within ``ADEQUATE_TOLERANCE`` of that at every calibration checkpoint — or, where
   the settled value is within ``ADEQUATE_SIGMAS`` standard errors of 0 (a data-refined LLC on
   data that w* does not fit: a ratio to it means nothing), within as many standard errors of it.

:func:`sgld_calibration` runs both (every chain cached like any sweep) and returns a
:class:`SGLDCalibration` with its figures (:func:`plot_calibration_traces`,
:func:`plot_calibration_region`, :func:`plot_running_llc`), a JSON record and one sentence.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from stagewise.llc.diagnostics import draws_from_trace, settled_standard_error
from stagewise.llc.sampler import LLCResult, SGLDConfig
from stagewise.llc.sweep import Checkpoint, LLCSweep, estimate_llc_sweep

__all__ = ["CalibrationSettings", "CalibrationResult", "SGLDCalibration", "ADEQUATE_TOLERANCE", "ADEQUATE_SIGMAS",
           "CELL_CLASSES",
           "calibrate_sgld", "calibration_checkpoints", "classify_estimate", "sgld_calibration",
           "plot_llc_traces", "plot_calibration_traces", "plot_calibration_region", "plot_running_llc",
           "save_calibration_figures"]

log = logging.getLogger(__name__)

# The profile's estimate may differ from the long chain's settled value by this much: the 5% to
# which the convergence diagnostic asks the running estimate to settle (diagnostics.SETTLE_TOLERANCE).
ADEQUATE_TOLERANCE = 0.05
# Where the settled value (its second half's mean) is within this many of its standard errors of 0
# (noise and autocorrelation time as the convergence diagnostic measures them), a ratio to it means
# nothing (the code wdrLLC of a `cpu` head at the last checkpoint: −0.01 against −0.27, "4.9%"):
# there the profile's estimate must lie within as many standard errors of it instead. A settled
# value clear of 0 keeps the 5% test however noisy the long chain: noise never makes a budget adequate.
ADEQUATE_SIGMAS = 2.0
# the 'early' calibration checkpoint: the first whose λ̂ reaches this fraction of the peak
EARLY_FRACTION = 0.25
CELL_CLASSES = ("good", "stalled", "escape", "diverged")
_CELL_COLORS = {"good": "#4daf4a", "stalled": "#ffbf00", "escape": "#377eb8", "diverged": "#e41a1c"}


@dataclass(frozen=True)
class CalibrationSettings:
    """The D.3.3 calibration of one setting (a profile field; the numbers behind it go in its comment).

    epsilon_factors / nbeta_factors: the grid, as multiples of the profile's ε and nβ (1 must be in
    both: the profile's own cell). num_chains / num_burnin / num_draws: the grid's short chains
    (num_burnin None: the profile's, so the profile's cell sees the profile's burn-in).
    long_factor: the long chain runs this many times the profile's draws (same burn-in).
    num_checkpoints: how many representative checkpoints (:func:`calibration_checkpoints`, ≤ 4).
    gamma_factors: a third axis, γ as multiples of the profile's (escapes: D.3.3's smallest γ
    without them); the figures' rows are the (nβ, γ) pairs.
    """

    epsilon_factors: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
    nbeta_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    num_chains: int = 1
    num_burnin: int | None = None  # None: the profile's burn-in
    num_draws: int = 200
    long_factor: int = 5
    num_checkpoints: int = 4
    gamma_factors: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if 1.0 not in self.epsilon_factors or 1.0 not in self.nbeta_factors or 1.0 not in self.gamma_factors:
            raise ValueError("epsilon_factors, nbeta_factors and gamma_factors must contain 1.0 (the profile's own setting)")
        if any(f <= 0 for f in (*self.epsilon_factors, *self.nbeta_factors, *self.gamma_factors)):
            raise ValueError("grid factors must be > 0")
        if self.long_factor < 2 or not 1 <= self.num_checkpoints <= 4 or self.num_draws < 1 or self.num_chains < 1:
            raise ValueError(f"bad calibration settings {self}")


# --------------------------------------------------------------------------------------------
# The grid (D.3.3, Fig. D.6)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Sweeps over checkpoints for each grid point (ε, γ, nβ) of the calibration grid."""

    epsilons: tuple[float, ...]
    gammas: tuple[float, ...]
    nbetas: tuple[float | None, ...]
    sweeps: dict[tuple[float, float, float | None], LLCSweep]

    def to_frame(self):
        """One row per (ε, γ, nβ, checkpoint): llc_mean, flags, convergence and the cell's ``class``."""
        import pandas as pd

        frames = []
        for (eps, gamma, nbeta), sweep in self.sweeps.items():
            df = sweep.to_frame()
            df.insert(0, "nbeta", sweep.results[0].nbeta if nbeta is None else nbeta)
            df.insert(0, "gamma", gamma)
            df.insert(0, "epsilon", eps)
            df["class"] = [classify_estimate(r) for r in sweep.results]
            frames.append(df)
        return pd.concat(frames, ignore_index=True)


def classify_estimate(result: LLCResult) -> str:
    """One calibration cell: 'diverged' (a NaN or divergent chain), 'escape' (a chain below ℓ(w*)),
    'stalled' (the estimate ``unconverged`` or a chain ``not_converged``), else 'good'."""
    flags = {f for fl in result.diagnostics.values() for f in fl}
    if flags & {"nan", "divergence"}:
        return "diverged"
    if "escape" in flags:
        return "escape"
    if result.unconverged or "not_converged" in flags:
        return "stalled"
    return "good"


def calibrate_sgld(
    checkpoints: Sequence[Checkpoint],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    base_config: SGLDConfig,
    *,
    epsilons: Sequence[float],
    gammas: Sequence[float] = (),
    nbetas: Sequence[float | None] = (),
    **sweep_kwargs,
) -> CalibrationResult:
    """Run :func:`estimate_llc_sweep` for every (ε, γ, nβ) of the grid (App. D.3.3, Fig. D.6).

    Unset axes keep ``base_config``'s value. Rule of thumb (D.3.3): the largest ε whose traces
    converge without divergence, the smallest γ without escapes, nβ as large as is stable.
    Results are cached like any sweep, so extending the grid only computes the new points.
    """
    gammas = tuple(gammas) or (base_config.gamma,)
    nbetas = tuple(nbetas) or (base_config.nbeta,)
    sweeps = {}
    for eps in epsilons:
        for gamma in gammas:
            for nbeta in nbetas:
                cfg = dataclasses.replace(base_config, epsilon=float(eps), gamma=float(gamma), nbeta=nbeta)
                log.info("calibration: epsilon=%g gamma=%g nbeta=%s", eps, gamma, nbeta)
                sweeps[(float(eps), float(gamma), nbeta)] = estimate_llc_sweep(
                    checkpoints, model_fn, loss, data, cfg, **sweep_kwargs)
    return CalibrationResult(tuple(map(float, epsilons)), tuple(map(float, gammas)), nbetas, sweeps)


def calibration_checkpoints(steps, llc, boundaries=(), num: int = 4) -> dict[str, int]:
    """Representative checkpoints (D.3.3) from an LLC curve: {'early', 'peak', 'boundary', 'late'}.

    early: the first step whose λ̂ reaches ``EARLY_FRACTION`` of the peak (in the rise; at the very
    first steps λ̂ ≈ 0 and a ratio to it means nothing); peak: the step of the largest λ̂; late: the last step;
    boundary: the step just before the boundary nearest the middle of the run in log steps (the
    one farthest from the others). Labels whose step another label already took are dropped; the
    first ``num`` of early, peak, late, boundary are kept (in step order)."""
    steps = np.asarray(steps)
    llc = np.asarray(llc, dtype=float)
    ok = (steps > 0) & np.isfinite(llc)
    if not ok.any():
        raise ValueError("no positive step with a finite LLC")
    s, v = steps[ok], llc[ok]
    peak = int(np.argmax(v))
    early = int(np.flatnonzero(v[:peak + 1] >= EARLY_FRACTION * v[peak])[0]) if v[peak] > 0 else 0
    picks = {"early": int(s[early]), "peak": int(s[peak]), "late": int(s[-1])}
    bounds = [b for b in np.asarray(boundaries, dtype=float) if s[0] < b < s[-1]]
    if bounds:
        mid = np.exp((np.log(s[0]) + np.log(s[-1])) / 2)
        b = min(bounds, key=lambda x: abs(np.log(x / mid)))
        picks["boundary"] = int(s[max(np.searchsorted(s, b) - 1, 0)])
    out: dict[str, int] = {}
    for label in ("early", "peak", "late", "boundary")[:num] if num < 4 else ("early", "peak", "late", "boundary"):
        if label in picks and picks[label] not in out.values():
            out[label] = picks[label]
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


# --------------------------------------------------------------------------------------------
# The calibration of one setting: grid + long chain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SGLDCalibration:
    """Outcome of :func:`sgld_calibration` for one setting (e.g. 'regression', 'lm', 'rllc')."""

    setting: str
    checkpoints: dict[str, int]  # label -> step
    config: SGLDConfig  # the profile's
    nbeta: float  # the profile's resolved nβ
    grid: CalibrationResult
    profile: dict[int, LLCResult]  # step -> the profile's estimate (C chains)
    long: dict[int, LLCResult]  # step -> the long chain (1 chain, same seed)

    @property
    def cells(self):
        """The grid's frame (:meth:`CalibrationResult.to_frame`) with ``label`` and the factor of
        ε and nβ against the profile's."""
        df = self.grid.to_frame()
        labels = {v: k for k, v in self.checkpoints.items()}
        df.insert(0, "label", df["step"].map(labels))
        df["is_profile"] = (np.isclose(df["epsilon"], self.config.epsilon) & np.isclose(df["nbeta"], self.nbeta)
                            & np.isclose(df["gamma"], self.config.gamma))
        return df

    def usable(self):
        """[(nβ, γ), ε] table: True where the cell is 'good' at every calibration checkpoint."""
        cells = self.cells.assign(nbeta=lambda f: f["nbeta"].map(_round), gamma=lambda f: f["gamma"].map(_round),
                                  epsilon=lambda f: f["epsilon"].map(_round))
        return cells.groupby(["nbeta", "gamma", "epsilon"])["class"].apply(lambda c: bool((c == "good").all())).unstack()

    def long_table(self):
        """Per calibration checkpoint: the profile's λ̂, the long chain's running estimate at the
        profile's draw count and at 2×, its final value and its second half alone (the settled
        value), ``ratio`` = profile λ̂ / settled value, ``settled_se`` the settled value's standard
        error (autocorrelation-corrected), ``near_zero``: |settled| ≤ 2 SE, ``allowed``: 2 SE if
        near zero, else 5% of |settled|, and ``within``: |profile λ̂ − settled| ≤ allowed."""
        import pandas as pd

        T = self.config.num_draws
        rows = []
        for label, step in self.checkpoints.items():
            p, lg = self.profile[step], self.long[step]
            trace = lg.llc_trace[0]
            d = draws_from_trace(lg.llc_trace)[0]
            settled = float(d[len(d) // 2:].mean())
            se = settled_standard_error(d)
            near_zero = bool(np.isfinite(se) and abs(settled) <= ADEQUATE_SIGMAS * se)
            allowed = ADEQUATE_SIGMAS * se if near_zero else ADEQUATE_TOLERANCE * abs(settled)
            rows.append({"label": label, "step": step, "profile": p.llc_mean,
                         "profile_chains": [float(x) for x in p.llc_per_chain],
                         "long_at_profile_draws": float(trace[T - 1]),
                         "long_at_2x": float(trace[min(2 * T, len(trace)) - 1]),
                         "long_final": float(trace[-1]), "long_settled": settled,
                         "ratio": p.llc_mean / settled if settled else float("nan"),
                         "settled_se": se, "near_zero": near_zero, "allowed": allowed,
                         "within": bool(abs(p.llc_mean - settled) <= allowed),
                         "profile_unconverged": p.unconverged, "profile_drift": p.convergence["drift"],
                         "long_unconverged": lg.unconverged,
                         "long_draws_to_settle": lg.convergence["draws_to_settle"]})
        return pd.DataFrame(rows)

    @property
    def adequate(self) -> bool:
        return bool(self.long_table()["within"].all())

    def sentence(self) -> str:
        """One sentence, computed from the numbers, on whether the profile's budget is adequate."""
        t = self.long_table()
        by_noise = t["near_zero"].to_numpy(dtype=bool)
        score = ((t["profile"] - t["long_settled"]).abs() / t["allowed"]).to_numpy(dtype=float)
        worst = t.iloc[int(np.nanargmax(score))] if np.isfinite(score).any() else t.iloc[0]
        cfg = self.config
        budget = f"{cfg.num_chains} × ({cfg.num_burnin} + {cfg.num_draws})"
        long_draws = self.long[t["step"].iloc[0]].config.num_draws
        verdict = "adequate" if self.adequate else "NOT adequate"
        parts = []
        rt = t[~by_noise]
        if len(rt):
            where = ("at the calibration checkpoint" if len(t) == 1 else
                     f"at the {len(t)} calibration checkpoints" if len(rt) == len(t) else
                     f"at {len(rt)} of the {len(t)} calibration checkpoints")
            ratios = (f"{rt['ratio'].iloc[0]:.1%}" if len(rt) == 1
                      else f"{rt['ratio'].min():.1%}–{rt['ratio'].max():.1%}")
            parts.append(f"{where} its estimate is {ratios} of a {long_draws}-draw chain's settled value "
                         f"(tolerance ±{ADEQUATE_TOLERANCE:.0%})")
        nt = t[by_noise]
        if len(nt):
            near = "; ".join(f"step {int(r.step)}: {r.profile:.3g} against {r.long_settled:.3g} ± {r.settled_se:.2g}"
                             for r in nt.itertuples())
            parts.append(f"where the {long_draws}-draw chain's settled value is within {ADEQUATE_SIGMAS:g} standard "
                         f"errors of 0, too near 0 for a ratio ({near}), the estimate must lie within as many of it")
        good = int((self.cells.query("is_profile")["class"] == "good").sum())
        return (f"{self.setting}: the profile's budget ({budget} steps, ε = {cfg.epsilon:g}, nβ = {self.nbeta:.3g}, "
                f"γ = {cfg.gamma:.3g}) is {verdict}: {'; '.join(parts)}; worst at step {int(worst['step'])} "
                f"({worst['label']}), and {good} of {len(t)} short-chain cells at its setting are good.")

    def to_record(self, sweep: LLCSweep | None = None) -> dict:
        """The headline JSON's ``sgld_calibration``: settings tried, the chosen one, the convergence
        at the calibration checkpoints, and (given the main sweep) the share of flagged estimates."""
        cells = self.cells
        usable = self.usable()
        rec = {
            "setting": self.setting,
            "checkpoints": self.checkpoints,
            "tried": {"epsilon": sorted({_round(e) for e in cells["epsilon"]}),
                      "nbeta": sorted({_round(b) for b in cells["nbeta"]}),
                      "gamma": sorted({_round(g) for g in cells["gamma"]}),
                      "short_chain": {"chains": self.grid.sweeps[next(iter(self.grid.sweeps))].results[0].config.num_chains,
                                      "burnin": self.grid.sweeps[next(iter(self.grid.sweeps))].results[0].config.num_burnin,
                                      "draws": self.grid.sweeps[next(iter(self.grid.sweeps))].results[0].config.num_draws}},
            "chosen": {"epsilon": self.config.epsilon, "nbeta": self.nbeta, "gamma": self.config.gamma,
                       "chains": self.config.num_chains, "burnin": self.config.num_burnin,
                       "draws": self.config.num_draws, "batch_size": self.config.batch_size},
            "cells": [{"epsilon": _round(r.epsilon), "nbeta": _round(r.nbeta), "gamma": _round(r.gamma),
                       "step": int(r.step), "class": r["class"],
                       "llc": float(r.llc_mean), "drift": float(r.drift)} for _, r in cells.iterrows()],
            "usable": [{"epsilon": _round(e), "nbeta": _round(b), "gamma": _round(g)} for b, g in usable.index
                       for e in usable.columns if bool(usable.loc[(b, g), e])],
            "long_chain": self.long_table().to_dict(orient="records"),
            "adequate": self.adequate,
            "tolerance": ADEQUATE_TOLERANCE,
            "tolerance_sigmas": ADEQUATE_SIGMAS,
            "sentence": self.sentence(),
        }
        if sweep is not None:
            rec["sweep"] = sweep.convergence_summary()
        return rec


def _round(x: float) -> float:
    return float(f"{float(x):.6g}")


def sgld_calibration(
    setting: str,
    checkpoints: Mapping[str, int],
    states: Mapping[int, object],
    model_fn: Callable[[], torch.nn.Module],
    loss: Callable,
    data,
    config: SGLDConfig,
    settings: CalibrationSettings,
    *,
    profile_sweep: LLCSweep | None = None,
    has_data: bool = True,
    **sweep_kwargs,
) -> SGLDCalibration:
    """The D.3.3 calibration of ``config`` at ``checkpoints`` ({label: step}, e.g. from
    :func:`calibration_checkpoints`); ``states[step]`` the weights (state_dict or path).

    The grid is ``settings.epsilon_factors`` × ``settings.nbeta_factors`` times the profile's ε and
    nβ (γ kept), of short chains; the long chain is ``config`` with one chain of
    ``settings.long_factor`` × its draws. The profile's own estimates come from ``profile_sweep``
    where it has the step, else are computed. ``sweep_kwargs`` go to :func:`estimate_llc_sweep`
    (compute_dtype, device, cache_root, progress, params_to_sample, ...), so every estimate is cached.
    """
    cks = [(int(s), states[int(s)]) for s in checkpoints.values()]
    nbeta = config.resolved_nbeta(has_data)
    burnin = config.num_burnin if settings.num_burnin is None else settings.num_burnin
    short = dataclasses.replace(config, num_chains=settings.num_chains, num_burnin=burnin, num_draws=settings.num_draws)
    grid = calibrate_sgld(cks, model_fn, loss, data, short,
                          epsilons=[config.epsilon * f for f in settings.epsilon_factors],
                          nbetas=[nbeta * f for f in settings.nbeta_factors],
                          gammas=[config.gamma * f for f in settings.gamma_factors], **sweep_kwargs)
    profile: dict[int, LLCResult] = {}
    if profile_sweep is not None:
        profile = {int(s): r for s, r in zip(profile_sweep.steps, profile_sweep.results) if int(s) in dict(cks)}
    missing = [(s, w) for s, w in cks if s not in profile]
    if missing:
        sw = estimate_llc_sweep(missing, model_fn, loss, data, config, **sweep_kwargs)
        profile.update({int(s): r for s, r in zip(sw.steps, sw.results)})
    long_cfg = dataclasses.replace(config, num_chains=1, num_draws=settings.long_factor * config.num_draws)
    long_sweep = estimate_llc_sweep(cks, model_fn, loss, data, long_cfg, **sweep_kwargs)
    long = {int(s): r for s, r in zip(long_sweep.steps, long_sweep.results)}
    return SGLDCalibration(setting, dict(checkpoints), config, float(nbeta), grid, profile, long)


# --------------------------------------------------------------------------------------------
# Figures (D.6: the grid's traces, the usable region; D.7: running estimate against a long chain)
# --------------------------------------------------------------------------------------------


def _grid_rows(cal: SGLDCalibration) -> list[tuple[float, float]]:
    """The (nβ, γ) pairs of the grid, increasing."""
    return sorted((nb, g) for nb in cal.grid.nbetas for g in cal.grid.gammas)


def plot_calibration_traces(cal: SGLDCalibration, step: int | None = None):
    """Fig. D.6 style: rows nβ, columns ε; per chain the draws' nβ(ℓ(w_t) − ℓ(w*)) (thin) and the
    running λ̂_τ (thick) at checkpoint ``step`` (default: the LLC's peak, else the first). The
    profile's cell is framed; each title gives the cell's class."""
    import matplotlib.pyplot as plt

    from stagewise.plotting import apply_style

    apply_style()
    if step is None:
        step = cal.checkpoints.get("peak", next(iter(cal.checkpoints.values())))
    label = {v: k for k, v in cal.checkpoints.items()}.get(step, "")
    eps_list = sorted(cal.grid.epsilons)
    rows = _grid_rows(cal)
    fig, axes = plt.subplots(len(rows), len(eps_list), figsize=(2.4 * len(eps_list), 1.9 * len(rows)),
                             sharex=True, squeeze=False)
    for i, (nb, gamma) in enumerate(rows[::-1]):
        for j, eps in enumerate(eps_list):
            ax = axes[i][j]
            sweep = cal.grid.sweeps[(eps, gamma, nb)]
            r = sweep.results[int(np.flatnonzero(sweep.steps == step)[0])]
            cls = classify_estimate(r)
            d = draws_from_trace(r.llc_trace)
            x = np.arange(1, d.shape[1] + 1)
            for c in range(d.shape[0]):
                ax.plot(x, d[c], lw=0.5, alpha=0.5, color="tab:gray")
                ax.plot(x, r.llc_trace[c], lw=1.6, color=_CELL_COLORS[cls])
            finite = d[np.isfinite(d)]
            if finite.size:
                lo, hi = np.percentile(finite, [2, 98])
                pad = 0.1 * (hi - lo + 1e-12)
                ax.set_ylim(lo - pad, hi + pad)
            ax.axhline(0, lw=0.5, color="black")
            where = f"ε={eps:.2g}, nβ={nb:.3g}" + (f", γ={gamma:.3g}" if len(cal.grid.gammas) > 1 else "")
            ax.set_title(f"{where}\n{cls}", fontsize=7, color=_CELL_COLORS[cls])
            if np.isclose(eps, cal.config.epsilon) and np.isclose(nb, cal.nbeta) and np.isclose(gamma, cal.config.gamma):
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_linewidth(2.5)
                    side.set_edgecolor("black")
                ax.set_title(f"profile: {where}\n{cls}", fontsize=7, fontweight="bold",
                             color=_CELL_COLORS[cls])
            if i == len(rows) - 1:
                ax.set_xlabel("SGLD draw t")
            if j == 0:
                ax.set_ylabel("nβ(ℓ(w_t) − ℓ(w*))")
    gammas = f"γ = {cal.config.gamma:g}" if len(cal.grid.gammas) == 1 else "γ as titled"
    fig.suptitle(f"{cal.setting}: SGLD traces over ε × nβ at step {step} ({label}); {gammas}; thick: running λ̂_τ",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_calibration_region(cal: SGLDCalibration):
    """The ε × nβ map per calibration checkpoint: each cell's class (good / stalled / escape /
    diverged), the profile's setting circled."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from stagewise.plotting import apply_style

    apply_style()
    cells = cal.cells
    eps_list = sorted(cal.grid.epsilons)
    rows = _grid_rows(cal)
    n = len(cal.checkpoints)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 1.2, 1.2 + 0.45 * len(rows) + 0.6), squeeze=False)
    cmap = ListedColormap([_CELL_COLORS[c] for c in CELL_CLASSES])

    def row_of(nb, g):
        return min(range(len(rows)), key=lambda k: abs(rows[k][0] - nb) / max(abs(nb), 1e-12)
                   + abs(rows[k][1] - g) / max(abs(g), 1e-12))

    def col_of(e):
        return min(range(len(eps_list)), key=lambda k: abs(eps_list[k] - e) / e)

    for k, (label, step) in enumerate(cal.checkpoints.items()):
        ax = axes[0][k]
        sub = cells[cells["step"] == step]
        grid = np.full((len(rows), len(eps_list)), np.nan)
        for _, r in sub.iterrows():
            grid[row_of(r.nbeta, r.gamma), col_of(r.epsilon)] = CELL_CLASSES.index(r["class"])
        ax.grid(False)
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(CELL_CLASSES) - 0.5, origin="lower", aspect="auto")
        ax.scatter([col_of(cal.config.epsilon)], [row_of(cal.nbeta, cal.config.gamma)], s=160, facecolors="none",
                   edgecolors="black", linewidths=2)
        ax.set_xticks(range(len(eps_list)), [f"{e:.2g}" for e in eps_list], rotation=45, fontsize=7)
        ax.set_yticks(range(len(rows)), [f"{b:.3g}" if len(cal.grid.gammas) == 1 else f"{b:.3g}, γ {g:.3g}"
                                         for b, g in rows], fontsize=7)
        ax.set_xlabel("ε")
        if k == 0:
            ax.set_ylabel("nβ" if len(cal.grid.gammas) == 1 else "nβ, γ")
        ax.set_title(f"{label}: step {step}", fontsize=8)
    fig.legend(handles=[Patch(color=_CELL_COLORS[c], label=c) for c in CELL_CLASSES]
               + [Patch(facecolor="none", edgecolor="black", label="profile")],
               loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"{cal.setting}: usable SGLD region (short chains)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def plot_running_llc(cal: SGLDCalibration):
    """Fig. D.7 style: per calibration checkpoint, the long chain's running λ̂_τ against the draws,
    the profile's chains' running estimates on top, the profile's draw count marked, and the ±5%
    band around the long chain's settled value (its second half's mean)."""
    import matplotlib.pyplot as plt

    from stagewise.plotting import apply_style

    apply_style()
    table = cal.long_table().set_index("step")
    n = len(cal.checkpoints)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 2.6), squeeze=False)
    for k, (label, step) in enumerate(cal.checkpoints.items()):
        ax = axes[0][k]
        lg, p = cal.long[step], cal.profile[step]
        settled = table.loc[step, "long_settled"]
        x = np.arange(1, lg.llc_trace.shape[1] + 1)
        allowed = table.loc[step, "allowed"]
        ax.axhspan(settled - allowed, settled + allowed, color="tab:green", alpha=0.15, lw=0,
                   label=f"settled ± 5% (± {ADEQUATE_SIGMAS:g} SE near 0)")
        ax.plot(x, lg.llc_trace[0], color="black", lw=1.4, label=f"1 chain × {len(x)}")
        xp = np.arange(1, p.llc_trace.shape[1] + 1)
        for c in range(p.llc_trace.shape[0]):
            ax.plot(xp, p.llc_trace[c], color="tab:orange", lw=0.9, alpha=0.8,
                    label="profile's chains" if c == 0 else None)
        ax.axvline(cal.config.num_draws, color="tab:orange", ls="--", lw=0.8)
        ax.plot([cal.config.num_draws], [p.llc_mean], "o", color="tab:orange", ms=5)
        ax.set_xscale("log")
        ax.set_xlabel("SGLD draw τ")
        if k == 0:
            ax.set_ylabel("running λ̂_τ (eq. 26)")
        if table.loc[step, "near_zero"]:  # a ratio means nothing: the gap against the long chain's noise
            judged = f"profile − settled = {p.llc_mean - settled:.2g} (± {allowed:.2g})"
        else:
            judged = f"profile/settled = {table.loc[step, 'ratio']:.3f}"
        ax.set_title(f"{label}: step {step}\n{judged}", fontsize=8)
        lo = min(np.nanpercentile(lg.llc_trace[0][len(x) // 20:], 1), p.llc_mean, settled - allowed)
        hi = max(np.nanmax(lg.llc_trace[0][len(x) // 20:]), p.llc_mean, settled + allowed)
        pad = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    # below the panels, never over a chain's trace
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = 3 if n >= 2 else 1
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(f"{cal.setting}: the profile's running estimate against a {cal.long[next(iter(cal.long))].config.num_draws}"
                 "-draw chain", fontsize=9)
    legend_in = 0.16 * -(-len(handles) // ncol) + 0.1  # inches the legend's rows take
    fig.set_figheight(fig.get_figheight() + legend_in)
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
    return fig


def plot_llc_traces(calibration: CalibrationResult, step: int | None = None, nbeta: float | None = None):
    """Fig. D.6/D.7-style grid: rows γ, columns ε; per-chain online λ̂ traces (thin) and their mean
    (thick) at checkpoint ``step`` (default: the last), flagged chains drawn dashed."""
    import matplotlib.pyplot as plt

    from stagewise.plotting import apply_style

    apply_style()
    nbeta = calibration.nbetas[0] if nbeta is None else nbeta
    eps_list, gam_list = calibration.epsilons, calibration.gammas
    fig, axes = plt.subplots(len(gam_list), len(eps_list), figsize=(2.6 * len(eps_list), 2.0 * len(gam_list)),
                             sharex=True, squeeze=False)
    for i, gamma in enumerate(gam_list):
        for j, eps in enumerate(eps_list):
            ax = axes[i][j]
            sweep = calibration.sweeps[(eps, gamma, nbeta)]
            k = len(sweep.steps) - 1 if step is None else int(np.flatnonzero(sweep.steps == step)[0])
            r = sweep.results[k]
            x = np.arange(1, r.llc_trace.shape[1] + 1)
            for c in range(r.llc_trace.shape[0]):
                flagged = c in r.diagnostics
                ax.plot(x, r.llc_trace[c], lw=0.7, alpha=0.6, ls="--" if flagged else "-",
                        color="tab:red" if flagged else "tab:gray")
            ax.plot(x, r.llc_trace_mean, lw=1.8, color="black")
            flags = sorted({f for fl in r.diagnostics.values() for f in fl} | ({"unconverged"} if r.unconverged else set()))
            ax.set_title(f"ε={eps:g}, γ={gamma:g}" + (f"\n{', '.join(flags)}" if flags else ""), fontsize=8,
                         color="tab:red" if flags else "black")
            finite = r.llc_trace[np.isfinite(r.llc_trace)]
            if finite.size:
                lo, hi = np.percentile(finite, [1, 99])
                pad = 0.1 * (hi - lo + 1e-12)
                ax.set_ylim(lo - pad, hi + pad)
            if i == len(gam_list) - 1:
                ax.set_xlabel("SGLD draw τ")
            if j == 0:
                ax.set_ylabel("online λ̂_τ (eq. 26)")
    step_label = calibration.sweeps[(eps_list[0], gam_list[0], nbeta)].steps[-1 if step is None else 0]
    fig.suptitle(f"LLC traces at checkpoint {step if step is not None else int(step_label)}", fontsize=10)
    fig.tight_layout()
    return fig


def save_calibration_figures(cal: SGLDCalibration, tag: str, setting: str | None = None, **save_kwargs) -> list:
    """Draw and save the three calibration figures of ``cal`` as ``figD6_<tag>_sgld_grid``,
    ``figD6_<tag>_sgld_region`` and ``figD7_<tag>_running_llc``, each with ``setting`` (the profile
    and any non-paper ingredient) under its title; ``save_kwargs`` go to
    :func:`stagewise.plotting.save_figure` (profile, directory, formats). Returns the figures, left
    open so that a notebook shows them."""
    from stagewise.plotting import save_figure, stamp_setting

    figures = []
    for name, make in ((f"figD6_{tag}_sgld_grid", plot_calibration_traces),
                       (f"figD6_{tag}_sgld_region", plot_calibration_region),
                       (f"figD7_{tag}_running_llc", plot_running_llc)):
        fig = make(cal)
        if setting is not None:
            stamp_setting(fig, setting)
        save_figure(fig, name, **save_kwargs)
        figures.append(fig)
    return figures
