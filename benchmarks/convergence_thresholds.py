"""Fix the thresholds of stagewise.llc.diagnostics.estimate_convergence on synthetic chains with a
known answer, once (the numbers quoted in its comments come from this script).

Draws d_t = λ μ(t) + s λ a_t, a_t a unit-variance AR(1) with coefficient φ, λ = 100:

* stationary: μ = 1 (converged; any flag is a false alarm);
* lm: μ(t) = 1 − exp(−t/τ_r) with τ_r = 7.3, 2 chains × 80 draws, φ = 0.5, s = 0.1: the issue's LM
  chains (the running estimate at 80 draws is 91% of the settled value, chains ≈ 3% apart);
* truncated: τ_r = T/2 and T (the chain stops while its mean still climbs).

    python benchmarks/convergence_thresholds.py [--seeds 400]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from stagewise.llc.diagnostics import estimate_convergence, synthetic_llc_trace


def chains(rng, C, T, phi, s, tau_r=None, lam=100.0):
    return synthetic_llc_trace(rng, C, T, phi=phi, noise=s, tau_r=tau_r, lam=lam)


def rate(seeds, **kw):
    """Share of seeds flagged (any reason), by drift, by disagreement."""
    out = [estimate_convergence(chains(np.random.default_rng(seed), **kw)) for seed in range(seeds)]
    return (float(np.mean([o["unconverged"] for o in out])), float(np.mean(["drift" in o["reasons"] for o in out])),
            float(np.mean(["disagreement" in o["reasons"] for o in out])))


def chain_rel_se(T, phi, s):
    """Standard error of one chain's λ̂ relative to λ (AR(1): τ = (1 + φ)/(1 − φ))."""
    return s * np.sqrt((1 + phi) / (1 - phi) / T)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=400)
    n = ap.parse_args().seeds
    worst_drift, worst_precise = 0.0, 0.0
    print("stationary (every flag a false alarm): any / drift / disagreement; chain SE relative to λ")
    for C, T, phi, s in itertools.product((1, 2, 4), (40, 80, 300, 2000), (0.0, 0.5, 0.9), (0.1, 0.3)):
        r = rate(n, C=C, T=T, phi=phi, s=s)
        se = chain_rel_se(T, phi, s)
        worst_drift = max(worst_drift, r[1])
        if se <= 0.025:
            worst_precise = max(worst_precise, r[0])
        print(f"  C={C} T={T} phi={phi} s={s} (chain SE {se:.3f}): {r[0]:.3f} / {r[1]:.3f} / {r[2]:.3f}")
    print(f"  worst drift false-alarm rate {worst_drift:.3f}; worst any-flag rate where chain SE <= 2.5%: {worst_precise:.3f}")
    for phi, s in itertools.product((0.0, 0.5, 0.9), (0.05, 0.1, 0.3)):
        print(f"lm-like phi={phi} s={s}:", rate(n, C=2, T=80, phi=phi, s=s, tau_r=7.3), f"(chain SE {chain_rel_se(80, phi, s):.3f})")
    for C, T, frac in itertools.product((1, 2), (80, 300), (0.5, 1.0)):
        print(f"truncated C={C} T={T} tau_r={frac}T (phi 0.5, s 0.3):", rate(n, C=C, T=T, phi=0.5, s=0.3, tau_r=frac * T))


if __name__ == "__main__":
    main()
