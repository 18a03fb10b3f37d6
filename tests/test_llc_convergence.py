"""Per-estimate convergence of SGLD LLC estimates (stagewise.llc.diagnostics.estimate_convergence)
on synthetic chains with a known answer, and through the sampler, result cache and sweep frame."""

import numpy as np
import pytest
import torch

from stagewise.llc import LLCResult, SGLDConfig, estimate_llc
from stagewise.llc.diagnostics import (DRIFT_THRESHOLD, SETTLE_TOLERANCE, draws_from_trace, estimate_convergence,
                                       split_rhat, synthetic_llc_trace)

SEEDS = range(6)  # every claim below holds for each of these noise seeds, not for one


def _trace(seed, C, T, **kwargs):
    """Running estimates λ̂_τ [C, T] with a known answer (``synthetic_llc_trace``), seeded."""
    return synthetic_llc_trace(np.random.default_rng(seed), C, T, **kwargs)


@pytest.mark.parametrize("seed", SEEDS)
def test_converged_chains_pass(seed):
    r = estimate_convergence(_trace(seed, C=2, T=400))
    assert not r["unconverged"], r
    assert abs(r["drift"]) < DRIFT_THRESHOLD and r["rhat"] < 1.05 and r["spread"] < 0.05
    assert r["final"] == pytest.approx(100.0, rel=0.03)


@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_chain_is_flagged(seed):
    # the mean relaxes with a time constant as long as the chain: stopped mid-climb
    r = estimate_convergence(_trace(seed, C=1, T=300, noise=0.1, tau_r=300))
    assert r["unconverged"] and r["reasons"] == ["drift"], r
    assert r["drift"] > DRIFT_THRESHOLD and r["settle_fraction"] > 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_agreeing_chains_that_both_still_climb_are_flagged(seed):
    """The issue's LM case: 2 × 80 draws whose running estimate reaches 91% of the settled value
    (τ_r = 7.3: 1 − τ_r/80 ≈ 0.91), at the LM's noise (chains 2-3% apart). Agreement cannot see
    it; the drift does.
    The same chains run 10× longer have settled and pass (the flag is the climb, not the noise)."""
    short = estimate_convergence(_trace(seed, C=2, T=80, noise=0.1, tau_r=7.3))
    assert short["final"] == pytest.approx(91.0, abs=4.0)
    assert short["spread"] < 0.05  # the chains agree
    assert short["unconverged"] and "drift" in short["reasons"], short
    long = estimate_convergence(_trace(seed, C=2, T=800, noise=0.1, tau_r=7.3))
    assert not long["unconverged"], long
    assert long["final"] == pytest.approx(99.0, abs=2.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_disagreeing_chains_are_flagged(seed):
    # each chain converged, but to levels 30% apart (e.g. two basins): only agreement can see it
    r = estimate_convergence(_trace(seed, C=2, T=400, offsets=[0.0, 0.3]))
    assert r["unconverged"] and r["reasons"] == ["disagreement"], r
    assert r["spread"] > 0.15 and r["rhat"] > 1.1


def test_draws_to_settle_and_drift_exact_on_a_known_trace():
    # d_t = 90 for t ≤ 100, then 100 for t ≤ 400: λ̂_T = 97.5; λ̂_τ is within 5% (≥ 92.625) from τ = 133
    d = np.r_[np.full(100, 90.0), np.full(300, 100.0)][None, :]
    trace = np.cumsum(d, axis=1) / np.arange(1, 401)
    r = estimate_convergence(trace)
    final = 97.5
    assert r["final"] == pytest.approx(final)
    first_inside = int(np.ceil(100 * 10 / (100 - (1 - SETTLE_TOLERANCE) * final)))  # 100 + 10·100/(τ) ≥ 0.95·97.5
    assert r["draws_to_settle"] == first_inside
    assert r["drift"] == pytest.approx((final - trace[0, 299]) / final)
    assert r["half_drift"] == pytest.approx((100.0 - final) / final)  # the second half's mean is 100
    np.testing.assert_allclose(draws_from_trace(trace), d, rtol=1e-12)


def test_split_rhat_known_values():
    x = np.array([[1.0, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 1.0]])  # four halves with equal means: R̂ = sqrt((n−1)/n)
    assert split_rhat(x) == pytest.approx(np.sqrt(0.5))
    y = np.array([[0.0, 1.0, 10.0, 11.0]])  # halves at 0.5 and 10.5: B = 2·50 = 100, W = 0.5
    assert split_rhat(y) == pytest.approx(np.sqrt((0.5 * 0.5 + 100 / 2) / 0.5))


def _quadratic_llc(epsilon, draws, burnin, seed=0):
    cfg = SGLDConfig(epsilon=epsilon, gamma=1.0, nbeta=10.0, num_chains=2, num_draws=draws, num_burnin=burnin, seed=seed)
    return estimate_llc(lambda p, b: (p["w"] ** 2).sum(), {"w": torch.zeros(20, dtype=torch.float64)}, cfg,
                        progress=False)


def test_sampler_reports_unconverged_only_when_the_chain_has_not_relaxed():
    # K = ‖w‖², d = 20: λ = 10. Relaxation time of E‖w‖² ≈ 1/(ε nβ): 1,000 steps at ε = 1e-4 against
    # 200 draws (flagged), 10 steps at ε = 1e-2 with 100 burn-in and 1,000 draws (converged).
    slow = _quadratic_llc(1e-4, 200, 0)
    assert slow.unconverged and slow.convergence["drift"] > DRIFT_THRESHOLD
    assert "unconverged" in repr(slow)
    for seed in range(3):
        good = _quadratic_llc(1e-2, 1000, 100, seed)
        assert not good.unconverged, good.convergence
        assert good.llc_mean == pytest.approx(10.0, rel=0.15)


def test_convergence_is_derived_from_the_trace_so_old_cached_results_get_it():
    r = _quadratic_llc(1e-4, 200, 0)
    stored = r.to_dict()
    assert "convergence" not in stored  # never stored: a cached result of any age recomputes it
    again = LLCResult.from_dict(stored)
    assert again.convergence == r.convergence and again.unconverged


def test_excluded_chains_do_not_count():
    trace = _trace(0, C=2, T=400)
    trace[1] = np.inf  # a diverged chain, excluded from llc_mean
    assert estimate_convergence(trace, excluded=[1])["chains"] == 1
    assert not estimate_convergence(trace, excluded=[1])["unconverged"]
    assert np.isnan(estimate_convergence(trace, excluded=[0, 1])["final"])
