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
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["FLAGS", "chain_diagnostics"]

FLAGS = ("nan", "divergence", "not_converged", "escape")

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
