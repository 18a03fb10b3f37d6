"""Per-chain diagnostics of SGLD LLC estimates: the failure modes of main paper Fig. D.7.

Each chain's draws are summarised by d_t = nβ (ℓ_{B_t}(w_t) − ℓ_{B_t}(w*)), whose running mean is
the online trace λ̂_τ (eq. 26). A chain is flagged

* ``nan``: a non-finite loss anywhere (the sampler stops the chain). Excluded from llc_mean.
* ``divergence``: λ̂_c > d, twice the LLC d/2 of a regular model with d sampled weights. For any
  potential the localized posterior (eq. 7) gives λ̂ ≤ d/2 up to discretisation error, so only an
  unstable chain (ε too large) gets there. Excluded from llc_mean.
* ``not_converged``: the trace is still trending at the end (ε too small or too few draws): the
  mean of d_t over the last quarter of the draws differs from the third quarter's by more than
  10% of λ̂ and significantly. With C ≥ 4 chains the test is on the run (the chains' mean change
  against its standard error across chains, at a 1e-3 false-alarm rate of Student's t) and flags
  every chain; with fewer chains each chain is tested alone against 4 standard errors from its
  variance and integrated autocorrelation time (batch means over all draws; conservative).
* ``escape``: the last quarter's mean of d_t is negative: the chain found weights with lower loss
  than w* (w* is not a local minimum at this γ; increase γ, or w* is not converged).

The last two are reported (and logged) but the chain is kept, since dropping them would bias λ̂.

Per estimate (all chains together), :func:`estimate_convergence` gives the draws λ̂_τ needs to
settle within 5% of its final value, its drift over the last quarter, the chains' spread and
split-R̂, and the flag ``unconverged`` (``LLCResult.convergence``; not one of the per-chain flags,
so the per-chain ``diagnostics`` of every result, cached or new, keep their meaning).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["FLAGS", "ESTIMATE_FLAGS", "chain_diagnostics", "estimate_convergence", "split_rhat", "draws_from_trace",
           "settled_standard_error", "synthetic_llc_trace"]

FLAGS = ("nan", "divergence", "not_converged", "escape")
# per estimate (all chains together), in LLCResult.convergence, not in the per-chain diagnostics
ESTIMATE_FLAGS = ("unconverged",)

_MIN_DRAWS_FOR_TREND = 40
_TREND_SIGMAS = 4.0
_TREND_FALSE_ALARM = 1e-3
_MIN_CHAINS_FOR_RUN_TEST = 4
_TREND_RELATIVE = 0.10
_BLOCKS = 10


def _autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time τ by batch means: τ ≈ b Var(block means) / Var(x)."""
    var = x.var()
    if var == 0:
        return 1.0
    b = len(x) // _BLOCKS
    means = x[: b * _BLOCKS].reshape(_BLOCKS, b).mean(axis=1)
    return max(1.0, float(b * means.var(ddof=1) / var))


def chain_diagnostics(scaled_diffs: np.ndarray, llc_per_chain: np.ndarray, num_sampled: int
                      ) -> tuple[dict[int, list[str]], list[str]]:
    """Flags per chain from d_t = nβ(ℓ(w_t) − ℓ(w*)) [C, draws]; returns ({chain: flags}, messages)."""
    flags: dict[int, list[str]] = {}
    messages: list[str] = []
    C, T = scaled_diffs.shape

    def flag(c: int, name: str, msg: str) -> None:
        flags.setdefault(c, []).append(name)
        messages.append(f"SGLD chain {c}: {msg}")

    for c in range(C):
        d = scaled_diffs[c]
        if not np.all(np.isfinite(d)):
            flag(c, "nan", "non-finite loss (NaN/inf); excluded from llc_mean. Reduce epsilon.")
            continue
        lam = float(llc_per_chain[c])
        if lam > num_sampled:
            flag(c, "divergence", f"λ̂ = {lam:.4g} exceeds d = {num_sampled} (twice a regular model's d/2): "
                                  "the chain diverged; excluded from llc_mean. Reduce epsilon.")
            continue
        q = T // 4
        if q >= 1:
            last = d[T - q:]
            if last.mean() < 0:
                flag(c, "escape", f"loss over the last quarter of draws is below ℓ(w*) (mean nβΔℓ = "
                                  f"{last.mean():.4g}): the chain escaped to lower loss; increase gamma or check w*.")
        if T >= _MIN_DRAWS_FOR_TREND and C < _MIN_CHAINS_FOR_RUN_TEST:
            m3, m4 = float(d[T - 2 * q:T - q].mean()), float(d[T - q:].mean())
            se = float(np.sqrt(2 * d.var() * _autocorrelation_time(d) / q))  # SE of m4 − m3
            change = abs(m4 - m3)
            if change > _TREND_SIGMAS * se and change > _TREND_RELATIVE * abs(lam):
                flag(c, "not_converged", f"trace still trending at the end (mean nβΔℓ {m3:.4g} → {m4:.4g} "
                                         "between the last two quarters); increase epsilon or num_draws.")
    ok = [c for c in range(C) if c not in flags or flags[c] == ["escape"]]
    if T >= _MIN_DRAWS_FOR_TREND and len(ok) >= _MIN_CHAINS_FOR_RUN_TEST:
        q = T // 4
        changes = np.array([scaled_diffs[c, T - q:].mean() - scaled_diffs[c, T - 2 * q:T - q].mean() for c in ok])
        mean, se = float(changes.mean()), float(changes.std(ddof=1) / np.sqrt(len(ok)))
        lam = float(np.mean(llc_per_chain[ok]))
        threshold = stats.t.ppf(1 - _TREND_FALSE_ALARM / 2, len(ok) - 1) * se
        if abs(mean) > threshold and abs(mean) > _TREND_RELATIVE * abs(lam):
            for c in ok:
                flags.setdefault(c, []).append("not_converged")
            messages.append(f"SGLD chains {ok}: traces still trending at the end (mean nβΔℓ changes by {mean:.4g} "
                            f"between the last two quarters, λ̂ = {lam:.4g}); increase epsilon or num_draws.")
    return flags, messages


# --------------------------------------------------------------------------------------------
# Per-estimate convergence (issue: every LLC shown converged): settle time, drift, chain agreement
# --------------------------------------------------------------------------------------------

# The running estimate λ̂_τ "has settled" once it stays within this fraction of its final value.
SETTLE_TOLERANCE = 0.05
# Drift of λ̂_τ over the last quarter, (λ̂_T − λ̂_{3T/4}) / λ̂_T. It equals one third of the gap
# between the last quarter's mean of d_t and λ̂_T, and for a mean that relaxes exponentially with a
# time constant τ_r ≪ T, λ̂_T is low by ≈ 3 × drift (λ̂_τ ≈ λ(1 − τ_r/τ)). So 0.05/3: the estimate
# lies more than 5% from its own last quarter, i.e. is biased by more than ≈ 5%.
DRIFT_THRESHOLD = 0.05 / 3
# The same bias read off the halves: (mean of the second half − λ̂_T) / λ̂_T, i.e. half the change
# between the halves; more draws per mean than the last quarter, so it sees a climb that ended
# mid-chain (short calibration chains at a small ε) that the last quarter no longer shows.
HALF_DRIFT_THRESHOLD = 0.05
# ... and each gap must be significant: more than this many standard errors (noise estimated on the
# second half of the chains' mean d_t, τ by Geyer's initial positive sequence on the chains' pooled
# autocorrelation).
# Fixed once on synthetic chains (benchmarks/convergence_thresholds.py, 200 seeds per case, output in
# benchmarks/results/convergence_thresholds.txt; draws λ μ(t) + AR(1) noise, φ ∈ {0, 0.5, 0.9},
# 1-4 chains, 40-2,000 draws, per-draw noise 10-30% of λ). Stationary chains (every flag a false
# alarm): a drift flag in ≤ 1% of seeds where the chains hold ≳ 30 autocorrelation times, ≤ 3% at
# ≈ 15, up to 10-24% with 2-4 (φ = 0.9, 40-80 draws: there the noise itself is not measurable);
# where one chain's standard error is ≤ 2.5% of λ, any flag in ≤ 0.5%. The LM case (2 × 80
# draws, running estimate at 91% of the settled value) is flagged in 100% of seeds at the LM's own
# noise (chains 2-3% apart), 30-64% when a chain's error is 3-6% (the climb hides in the noise).
# A chain stopped mid-climb (relaxation time = its length, noise 30% of λ per draw): 300 draws
# 90% (1 chain) and 100% (2 chains), 80 draws 44% and 87%. 2 sigmas gave 3-6x the false alarms.
# (The last-quarter test alone, before the halves' was added: LM case 81%, stopped chains 18-100%.)
DRIFT_SIGMAS = 3.0
# Between-chain agreement: split-R̂ (Gelman et al. 2013, BDA3 §11.4, on d_t) above the classical
# 1.1 *and* a between-chain spread (sd of λ̂_c / λ̂) above 5%: chains that disagree by more than
# their noise and by more than the tolerance of a 5%-settled estimate. On the stationary synthetic
# chains it fires in ≤ 0.5% of seeds where one chain's standard error is ≤ 2% of λ, 3-7% at 2.5%,
# and mostly where it is ≥ 5% (there the chains do disagree by more than 5%: too few draws).
RHAT_THRESHOLD = 1.1
SPREAD_THRESHOLD = 0.05
# Fewer draws than this: the noise of the last quarter cannot be estimated; no drift test.
MIN_DRAWS_FOR_CONVERGENCE = 20


def _second_half_deviations(x: np.ndarray) -> np.ndarray:
    # Not detrended: on synthetic chains a linear detrend of so few draws removed real slow noise and
    # doubled the false alarms (stationary AR(1), φ = 0.9, 2 × 80 draws: 21% against 3%).
    half = x[..., x.shape[-1] // 2:]
    return half - half.mean(axis=-1, keepdims=True)


def _mean_noise_variance(d: np.ndarray) -> float:
    """σ²τ of the chains' mean draw m_t = mean_c d_t (Var of a mean of k draws ≈ σ²τ/k), from the
    second half (where a converged chain is stationary); τ from the chains'
    pooled autocorrelation (more data than m_t's own)."""
    resid_m = _second_half_deviations(d.mean(axis=0))
    resid_c = _second_half_deviations(d)
    n = resid_c.shape[1]
    if n < 4:
        return float(resid_m.var()) if n > 2 else float("nan")
    f = np.fft.rfft(resid_c - resid_c.mean(axis=1, keepdims=True), 2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n].sum(axis=0)
    tau = _ips_from_acf(acov / acov[0]) if acov[0] > 0 else 1.0
    return float(resid_m.var(ddof=2)) * tau


def settled_standard_error(draws: np.ndarray) -> float:
    """Standard error of the mean of the second half of draws d_t [C, T] (the chains' mean draw),
    with the noise and autocorrelation time estimated as for the drift test; NaN with < 2 draws."""
    draws = np.atleast_2d(draws)
    n_half = draws.shape[1] - draws.shape[1] // 2
    if n_half < 1:
        return float("nan")
    return float(np.sqrt(_mean_noise_variance(draws) / n_half))


def _ips_from_acf(acf: np.ndarray) -> float:
    tau = -1.0
    for k in range(0, len(acf) - 1, 2):
        pair = acf[k] + acf[k + 1]
        if pair <= 0:
            break
        tau += 2 * pair
    return max(1.0, tau)


def split_rhat(draws: np.ndarray) -> float:
    """Split-R̂ of draws [C, T]: each chain halved, R̂ = sqrt(var⁺ / W) over the 2C halves
    (Gelman et al., BDA3 §11.4). 1 = the halves agree; NaN with fewer than 2 draws per half."""
    C, T = draws.shape
    n = T // 2
    if n < 2:
        return float("nan")
    halves = np.concatenate([draws[:, :n], draws[:, T - n:]], axis=0)
    W = float(halves.var(axis=1, ddof=1).mean())
    B = n * float(halves.mean(axis=1).var(ddof=1))
    if W == 0:
        return float("nan") if B == 0 else float("inf")
    return float(np.sqrt(((n - 1) / n * W + B / n) / W))


def draws_from_trace(llc_trace: np.ndarray) -> np.ndarray:
    """d_t = nβ(ℓ(w_t) − ℓ(w*)) [C, T] back from the running estimate λ̂_τ of eq. (26) (its differences)."""
    t = np.arange(1, llc_trace.shape[1] + 1)
    total = llc_trace * t
    return np.concatenate([total[:, :1], np.diff(total, axis=1)], axis=1)


def estimate_convergence(llc_trace: np.ndarray, excluded: list[int] | tuple[int, ...] = ()) -> dict:
    """Convergence of one LLC estimate from its chains' running estimates λ̂_τ [C, T] (eq. 26).

    Over the chains not excluded (their mean λ̂_τ is the estimate's running value):

    * ``draws_to_settle``: the draw after which λ̂_τ stays within ``SETTLE_TOLERANCE`` (5%) of its
      final value λ̂_T, and ``settle_fraction`` = that / T;
    * ``drift``: (λ̂_T − λ̂_{T−T/4}) / |λ̂_T|, the relative change over the last quarter (positive =
      still climbing), and ``drift_z``: that change over its standard error; ``half_drift`` (and
      ``half_drift_z``): the second half's mean of d_t against λ̂_T, relative;
    * ``spread``: sd of the per-chain λ̂_c over |λ̂_T| (NaN with one chain), ``rhat``: split-R̂ of
      d_t (NaN with one chain), ``rel_se``: the noise-only standard error of λ̂_T over |λ̂_T|;
    * ``unconverged`` with ``reasons`` ⊆ {'drift', 'disagreement'}: |drift| > ``DRIFT_THRESHOLD``
      and |drift_z| > ``DRIFT_SIGMAS``, or |half_drift| > ``HALF_DRIFT_THRESHOLD`` and |half_drift_z| >
      ``DRIFT_SIGMAS`` (both: λ̂_T more than ≈ 5% from where the chain has got to); or R̂ >
      ``RHAT_THRESHOLD`` and spread > ``SPREAD_THRESHOLD``.

    The per-chain ``not_converged`` flag (:func:`chain_diagnostics`) compares quarters 3 and 4 of
    each chain: it sees a climb that lasts to the end, not an early climb that still biases the
    mean (the LM's chains of issue 35: both 9% low at 80 draws, flat in their last half).
    """
    keep = [c for c in range(llc_trace.shape[0]) if c not in set(excluded)]
    T = llc_trace.shape[1]
    out = {"draws": int(T), "chains": len(keep), "final": float("nan"), "draws_to_settle": None,
           "settle_fraction": float("nan"), "drift": float("nan"), "drift_z": float("nan"),
           "half_drift": float("nan"), "half_drift_z": float("nan"),
           "spread": float("nan"), "rhat": float("nan"), "rel_se": float("nan"),
           "unconverged": False, "reasons": []}
    if not keep or not np.all(np.isfinite(llc_trace[keep])):
        return out
    running = llc_trace[keep].mean(axis=0)
    final = float(running[-1])
    scale = abs(final)
    out["final"] = final
    with np.errstate(divide="ignore", invalid="ignore"):
        outside = np.flatnonzero(np.abs(running - final) > SETTLE_TOLERANCE * scale)
        out["draws_to_settle"] = int(outside[-1] + 2) if len(outside) else 1
        out["settle_fraction"] = out["draws_to_settle"] / T
        d = draws_from_trace(llc_trace[keep])
        per_chain = llc_trace[keep, -1]
        if len(keep) >= 2:
            out["spread"] = float(per_chain.std(ddof=1) / scale)
            out["rhat"] = split_rhat(d)
        q = T // 4
        if q >= 1:
            out["drift"] = float((final - running[T - q - 1]) / scale)
        if T >= MIN_DRAWS_FOR_CONVERGENCE:
            noise_var = _mean_noise_variance(d)
            # Var(L − λ̂_T) = (3/4) σ²τ/q for stationary draws (L the last quarter's mean); drift = (L − λ̂_T)/3
            se_gap = np.sqrt(0.75 * noise_var / q)
            gap = 3 * (final - running[T - q - 1])
            out["drift_z"] = float(gap / se_gap) if se_gap > 0 else float("inf") * np.sign(gap)
            out["rel_se"] = float(np.sqrt(noise_var / T) / scale)
            # the second half's mean against λ̂_T: Var = σ²τ/T for stationary draws (T even)
            m = d.mean(axis=0)
            half_gap = float(m[T - T // 2:].mean() - final)
            se_half = np.sqrt(noise_var / T)
            out["half_drift"] = half_gap / scale
            out["half_drift_z"] = float(half_gap / se_half) if se_half > 0 else float("inf") * np.sign(half_gap)
    reasons = []
    if ((abs(out["drift"]) > DRIFT_THRESHOLD and abs(out["drift_z"]) > DRIFT_SIGMAS)
            or (abs(out["half_drift"]) > HALF_DRIFT_THRESHOLD and abs(out["half_drift_z"]) > DRIFT_SIGMAS)):
        reasons.append("drift")
    if out["rhat"] > RHAT_THRESHOLD and out["spread"] > SPREAD_THRESHOLD:
        reasons.append("disagreement")
    out["reasons"] = reasons
    out["unconverged"] = bool(reasons)
    return out


def synthetic_llc_trace(rng: np.random.Generator, num_chains: int, num_draws: int, phi: float = 0.5,
                        noise: float = 0.1, tau_r: float | None = None, lam: float = 100.0,
                        offsets=None) -> np.ndarray:
    """Running estimates λ̂_τ [C, T] with a known answer, for tests and for fixing the thresholds
    above (``benchmarks/convergence_thresholds.py``): draws d_t = λ_c μ(t) + noise · λ · a_t with
    a_t a unit-variance AR(1)(φ) per chain, μ = 1 (converged) or 1 − exp(−t/τ_r) (a chain whose mean
    still relaxes from w*), λ_c = λ (1 + offsets[c]) (chains that disagree)."""
    a = np.empty((num_chains, num_draws))
    a[:, 0] = rng.standard_normal(num_chains)
    innov = rng.standard_normal((num_chains, num_draws)) * np.sqrt(1 - phi**2)
    for t in range(1, num_draws):
        a[:, t] = phi * a[:, t - 1] + innov[:, t]
    t = np.arange(1, num_draws + 1)
    mu = np.ones(num_draws) if tau_r is None else 1 - np.exp(-t / tau_r)
    level = lam * (1 + np.asarray(offsets if offsets is not None else np.zeros(num_chains)))[:, None]
    return np.cumsum(level * mu + noise * lam * a, axis=1) / t
