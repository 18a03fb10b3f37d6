"""The SGLD LLC estimator against known answers (main paper App. A.1) and its contracts."""

import logging
import math

import numpy as np
import pytest
import torch

from stagewise.llc import SGLDConfig, default_nbeta, estimate_llc


def _potential_llc(K, dim, nbeta, epsilon, gamma, seed, chains=64, draws=1500, mode="vmap"):
    cfg = SGLDConfig(epsilon=epsilon, gamma=gamma, nbeta=nbeta, num_chains=chains, num_draws=draws,
                     num_burnin=draws // 5, seed=seed)
    return estimate_llc(lambda p, batch: K(p["w"]), {"w": torch.zeros(dim, dtype=torch.float64)}, cfg,
                        progress=False, chain_mode=mode)


# App. A.1 potentials at w* = 0 with their exact LLCs. Settings: nβ large against γ = 1 (the
# localized posterior's own value, computed by quadrature, is within 6% of λ at these nβ), and ε
# per potential small against the stiffest curvature (ε nβ K'' ≲ 0.1: discretisation bias ≲ 2.5%)
# yet large enough to mix in 1,500 draws. Checked on seeds 0, 1, 2: all within 8% of λ.
POTENTIALS = {
    "w1²+w2²+w3²": (lambda w: w[0] ** 2 + w[1] ** 2 + w[2] ** 2, 3, 1.5, 1e4, 4e-6),
    "w1²+w2² in R³": (lambda w: w[0] ** 2 + w[1] ** 2, 3, 1.0, 1e4, 4e-6),
    "w1²+w2⁴+w3⁴": (lambda w: w[0] ** 2 + w[1] ** 4 + w[2] ** 4, 3, 1.0, 1e3, 4e-5),
    "w1⁴+w2⁴": (lambda w: w[0] ** 4 + w[1] ** 4, 2, 0.5, 1e3, 1e-4),
    "w1²w2⁴": (lambda w: w[0] ** 2 * w[1] ** 4, 2, 0.25, 1e4, 3e-4),
    "(w1−1)²(w1²+w2²)⁴": (lambda w: (w[0] - 1) ** 2 * (w[0] ** 2 + w[1] ** 2) ** 4, 2, 0.25, 1e4, 3e-4),
}
RELATIVE_TOLERANCE = 0.12  # stated tolerance: |λ̂ − λ| ≤ 12% of λ (≈ 3 chain standard errors)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POTENTIALS))
def test_potentials_recover_exact_llc(name):
    K, dim, lam, nbeta, eps = POTENTIALS[name]
    seed = list(POTENTIALS).index(name) % 3  # seeds vary across potentials
    r = _potential_llc(K, dim, nbeta, eps, gamma=1.0, seed=seed)
    assert abs(r.llc_mean - lam) <= RELATIVE_TOLERANCE * lam, (name, r.llc_mean, r.llc_sem)
    assert not r.diagnostics, r.diagnostics  # a correct run raises no flags


def test_regular_linear_regression_llc_is_half_the_dimension():
    """A regular model with data: λ = d/2, at nβ = m / log m with minibatches (D.3.1)."""
    gen = torch.Generator().manual_seed(0)
    d, n = 6, 4096
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    w_star = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)  # the empirical loss's minimum

    def loss_fn(p, batch):
        xb, yb = batch
        return ((xb @ p["w"] - yb) ** 2).mean()

    cfg = SGLDConfig(epsilon=4e-4, gamma=1.0, nbeta=None, num_chains=16, num_draws=1500, num_burnin=300,
                     batch_size=256, seed=0)
    r = estimate_llc(loss_fn, {"w": w_star}, cfg, data=(x, y), progress=False)
    assert r.nbeta == pytest.approx(256 / math.log(256))
    assert abs(r.llc_mean - d / 2) <= 0.1 * d / 2, (r.llc_mean, r.llc_sem)
    assert not r.diagnostics
    # eq. (26): the online trace ends at the per-chain estimate; λ̂_1 = nβ (ℓ(w_1) − ℓ(w*)).
    np.testing.assert_allclose(r.llc_trace[:, -1], r.llc_per_chain)
    np.testing.assert_allclose(r.llc_trace[:, 0], r.nbeta * (r.loss_trace[:, 0] - r.loss_init_trace[0]))
    assert r.loss_trace.shape == r.llc_trace.shape == (16, 1500)
    assert r.burnin_loss_trace.shape == (16, 300)


def _quadratic(p, batch):
    return (p["w"] ** 2).sum() + (p["v"] ** 2).sum()


def _quadratic_params():
    return {"w": torch.linspace(-0.1, 0.1, 5, dtype=torch.float64), "v": torch.ones(3, 2, dtype=torch.float64) * 0.01}


def test_same_seed_identical_result_and_loop_equals_vmap():
    cfg = SGLDConfig(epsilon=1e-4, gamma=10.0, nbeta=100.0, num_chains=3, num_draws=50, num_burnin=10, seed=7)
    a = estimate_llc(_quadratic, _quadratic_params(), cfg, progress=False, chain_mode="loop")
    b = estimate_llc(_quadratic, _quadratic_params(), cfg, progress=False, chain_mode="loop")
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    assert a.llc_mean == b.llc_mean
    v = estimate_llc(_quadratic, _quadratic_params(), cfg, progress=False, chain_mode="vmap")
    np.testing.assert_allclose(v.loss_trace, a.loss_trace, rtol=1e-10)  # same noise streams per chain
    c = estimate_llc(_quadratic, _quadratic_params(), SGLDConfig(**{**cfg.__dict__, "seed": 8}), progress=False)
    assert not np.array_equal(c.loss_trace, a.loss_trace)
    # chains are distinct Markov chains, not copies
    assert not np.array_equal(a.loss_trace[0], a.loss_trace[1])


def test_batch_order_fixed_by_seed_not_by_weights():
    """D.3.2: estimates at different checkpoints see the same batches (and noise)."""
    rows = torch.arange(40, dtype=torch.float64)
    seen = []

    def loss_fn(p, batch):
        seen.append(batch[0].clone())
        return ((p["w"] - batch[1].mean()) ** 2).sum()

    cfg = SGLDConfig(epsilon=1e-3, gamma=1.0, num_chains=2, num_draws=12, num_burnin=3, batch_size=8, seed=3)
    data = (rows, torch.randn(40, dtype=torch.float64))
    estimate_llc(loss_fn, {"w": torch.zeros(2, dtype=torch.float64)}, cfg, data=data, progress=False, chain_mode="loop")
    first, seen[:] = list(seen), []
    estimate_llc(loss_fn, {"w": torch.ones(2, dtype=torch.float64)}, cfg, data=data, progress=False, chain_mode="loop")
    assert len(first) == len(seen) > 0 and all(torch.equal(a, b) for a, b in zip(first, seen))
    # epochs without replacement: the first 5 batches of 8 rows cover the 40 rows once
    chain_batches = [b for i, b in enumerate(first)]
    covered = torch.cat([chain_batches[i] for i in range(0, 3 * 2, 2)])  # steps 0-2, chain 0 (loop: chains 0,1 per step)
    assert len(set(covered.tolist())) == 24


def test_inputs_not_mutated_and_frozen_weights_bit_identical():
    params = _quadratic_params()
    before = {k: v.clone() for k, v in params.items()}
    mask_v = torch.zeros(3, 2, dtype=torch.bool)
    mask_v[1] = True  # only row 1 of v moves (a "head" inside a fused tensor)
    seen = []

    def loss_fn(p, batch):
        seen.append({k: t.detach().clone() for k, t in p.items()})
        return _quadratic(p, batch)

    cfg = SGLDConfig(epsilon=1e-2, gamma=1.0, nbeta=10.0, num_chains=2, num_draws=20, num_burnin=5, seed=0)
    r = estimate_llc(loss_fn, params, cfg, params_to_sample=["v"], param_mask={"v": mask_v}, progress=False)
    for k in params:
        assert torch.equal(params[k], before[k])
    assert r.num_sampled == 2
    sampled_calls = seen[1:]  # call 0 might be ℓ(w*); every call must keep the frozen weights exactly
    assert all(torch.equal(s["w"], before["w"]) for s in seen)
    assert all(torch.equal(s["v"][~mask_v], before["v"][~mask_v]) for s in seen)
    assert any(not torch.equal(s["v"][mask_v], before["v"][mask_v]) for s in sampled_calls)


def test_weight_refined_llc_counts_only_sampled_directions():
    """λ̂ of Σ w_i² restricted to k coordinates is k/2: frozen weights contribute nothing."""
    K = lambda p, b: (p["a"] ** 2).sum() + (p["b"] ** 2).sum()  # noqa: E731
    params = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(4, dtype=torch.float64)}
    cfg = SGLDConfig(epsilon=4e-6, gamma=1.0, nbeta=1e4, num_chains=32, num_draws=1000, num_burnin=200, seed=1)
    r = estimate_llc(K, params, cfg, params_to_sample=lambda n: n == "a", progress=False, chain_mode="vmap")
    assert abs(r.llc_mean - 1.0) < 0.1


def test_too_large_epsilon_is_flagged_and_excluded(caplog):
    # w⁴ at ε nβ = 1: chains that wander out become unstable (the step grows with w³) and blow up.
    cfg = SGLDConfig(epsilon=0.05, gamma=0.0, nbeta=20.0, num_chains=8, num_draws=200, num_burnin=0, seed=0)
    with caplog.at_level(logging.WARNING, logger="stagewise.llc"):
        r = estimate_llc(lambda p, b: (p["w"] ** 4).sum(), {"w": torch.zeros(4, dtype=torch.float64)}, cfg,
                         progress=False, chain_mode="loop")
    bad = [c for c, f in r.diagnostics.items() if {"nan", "divergence"} & set(f)]
    assert bad and r.excluded_chains == sorted(bad)
    keep = [c for c in range(8) if c not in bad]
    if keep:
        assert r.llc_mean == pytest.approx(r.llc_per_chain[keep].mean())
    else:
        assert math.isnan(r.llc_mean)
    assert "excluded" in caplog.text


def test_divergence_from_instability_on_a_quadratic():
    # ε nβ K'' = 4 > 2: the SGLD recursion on w² is unstable and overflows to inf → NaN.
    cfg = SGLDConfig(epsilon=0.02, gamma=1.0, nbeta=100.0, num_chains=2, num_draws=800, num_burnin=0, seed=0)
    r = estimate_llc(lambda p, b: (p["w"] ** 2).sum(), {"w": torch.zeros(3, dtype=torch.float64)}, cfg, progress=False)
    assert r.excluded_chains == [0, 1]
    assert all({"nan", "divergence"} & set(f) for f in r.diagnostics.values())
    assert math.isnan(r.llc_mean)


def test_escape_flagged_when_w_star_is_not_a_minimum():
    cfg = SGLDConfig(epsilon=1e-3, gamma=0.1, nbeta=100.0, num_chains=2, num_draws=400, num_burnin=50, seed=0)
    r = estimate_llc(lambda p, b: ((p["w"] - 1) ** 2).sum(), {"w": torch.full((2,), 0.5, dtype=torch.float64)}, cfg,
                     progress=False)
    assert all("escape" in f for f in r.diagnostics.values()) and len(r.diagnostics) == 2
    assert r.llc_mean < 0


def test_non_convergence_flagged_when_trace_still_trending():
    # relaxation time 1/(ε nβ) = 10,000 steps ≫ 400 draws: the loss is still rising at the end.
    cfg = SGLDConfig(epsilon=1e-5, gamma=1.0, nbeta=10.0, num_chains=8, num_draws=400, num_burnin=0, seed=0)
    r = estimate_llc(lambda p, b: (p["w"] ** 2).sum(), {"w": torch.zeros(50, dtype=torch.float64)}, cfg, progress=False)
    assert all("not_converged" in f for f in r.diagnostics.values()) and len(r.diagnostics) == 8


@pytest.mark.parametrize("field,value", [
    ("epsilon", 0.0), ("epsilon", -1e-3), ("epsilon", float("nan")), ("gamma", -1.0), ("gamma", float("inf")),
    ("nbeta", 0.0), ("nbeta", -5.0), ("num_chains", 0), ("num_chains", 2.0), ("num_draws", 0),
    ("num_burnin", -1), ("batch_size", 1), ("seed", -1), ("num_chains", True), ("epsilon", "1e-3"),
])
def test_bad_config_rejected_with_field_name(field, value):
    with pytest.raises(ValueError, match=field):
        SGLDConfig(**{field: value})


def test_nbeta_required_without_data_and_default_with_data():
    with pytest.raises(ValueError, match="nbeta"):
        estimate_llc(_quadratic, _quadratic_params(), SGLDConfig(num_draws=2, num_burnin=0), progress=False)
    assert default_nbeta(1024) == pytest.approx(1024 / math.log(1024))
    cfg = SGLDConfig.from_tilde(epsilon=3e-4, beta_tilde=0.01, gamma_tilde=0.01)
    assert cfg.nbeta == pytest.approx(2 * 0.01 / 3e-4) and cfg.gamma == pytest.approx(2 * 0.01 / 3e-4)


def test_bad_inputs_rejected():
    cfg = SGLDConfig(nbeta=1.0, num_draws=2, num_burnin=0)
    with pytest.raises(KeyError, match="nope"):
        estimate_llc(_quadratic, _quadratic_params(), cfg, params_to_sample=["nope"], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_llc(_quadratic, _quadratic_params(), SGLDConfig(batch_size=64, num_draws=2), data=torch.zeros(10, 1),
                     progress=False)
    with pytest.raises(ValueError, match="param_mask"):
        estimate_llc(_quadratic, _quadratic_params(), cfg, param_mask={"w": torch.ones(2, dtype=torch.bool)},
                     progress=False)
    with pytest.raises(ValueError, match="scalar"):
        estimate_llc(lambda p, b: p["w"] ** 2, _quadratic_params(), cfg, progress=False)


def test_result_roundtrips_through_dict():
    cfg = SGLDConfig(epsilon=1e-4, gamma=10.0, nbeta=100.0, num_chains=2, num_draws=10, num_burnin=2)
    r = estimate_llc(_quadratic, _quadratic_params(), cfg, progress=False)
    from stagewise.llc import LLCResult

    r2 = LLCResult.from_dict(r.to_dict())
    assert r2.llc_mean == r.llc_mean and r2.config == r.config
    np.testing.assert_array_equal(r2.llc_trace, r.llc_trace)



# --------------------------------------------------------------------------------------------
# compute_dtype="bfloat16": the loss under bf16 autocast, the SGLD state in fp32
# --------------------------------------------------------------------------------------------


def _teacher_mlp():
    """A small tanh MLP regression at its teacher weights (fp32), data from the teacher + noise."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    n, d_in, h = 4096, 8, 32
    x = torch.randn(n, d_in, generator=gen)
    w = {"W1": torch.randn(h, d_in, generator=gen) / d_in ** 0.5, "b1": 0.1 * torch.randn(h, generator=gen),
         "W2": torch.randn(1, h, generator=gen) / h ** 0.5}

    def loss_fn(p, batch):
        xb, yb = batch
        return ((F.linear(torch.tanh(F.linear(xb, p["W1"], p["b1"])), p["W2"]).squeeze(-1) - yb) ** 2).mean()

    with torch.no_grad():
        y = F.linear(torch.tanh(F.linear(x, w["W1"], w["b1"])), w["W2"]).squeeze(-1) + 0.1 * torch.randn(n, generator=gen)
    return loss_fn, w, (x, y)


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_bfloat16_compute_agrees_with_fp32_within_standard_error_and_is_deterministic(mode):
    loss_fn, w_star, data = _teacher_mlp()
    cfg = SGLDConfig(epsilon=3e-3, gamma=100.0, num_chains=8, num_draws=200, num_burnin=50, batch_size=256, seed=0)
    run = lambda cd: estimate_llc(loss_fn, w_star, cfg, data=data, progress=False, chain_mode=mode,  # noqa: E731
                                  compute_dtype=cd)
    fp32, bf16, again = run(None), run("bfloat16"), run("bfloat16")
    assert fp32.compute_dtype is None and bf16.compute_dtype == "bfloat16"
    # autocast really ran: ℓ(w*) and the draws carry bf16 rounding ...
    assert not np.array_equal(bf16.loss_trace, fp32.loss_trace)
    assert bf16.loss_init != fp32.loss_init
    # ... but the estimate stays within the fp32 run's chain standard error (same seed: same noise, batches)
    assert abs(bf16.llc_mean - fp32.llc_mean) <= fp32.llc_sem, (bf16.llc_mean, fp32.llc_mean, fp32.llc_sem)
    assert fp32.llc_mean > 5 * fp32.llc_sem  # a non-trivial estimate, not 0 ± noise
    np.testing.assert_array_equal(again.loss_trace, bf16.loss_trace)  # same seed, same numbers
    assert again.llc_mean == bf16.llc_mean


def test_bfloat16_leaves_the_sgld_update_in_fp32():
    """A potential with no autocast-eligible op (elementwise powers, sums) is unchanged bit for bit:
    only the loss's matmuls change precision; state, noise, localization and update stay fp32."""
    params = {k: v.float() for k, v in _quadratic_params().items()}
    cfg = SGLDConfig(epsilon=1e-4, gamma=10.0, nbeta=100.0, num_chains=3, num_draws=50, num_burnin=10, seed=7)
    for mode in ("loop", "vmap"):
        a = estimate_llc(_quadratic, params, cfg, progress=False, chain_mode=mode)
        b = estimate_llc(_quadratic, params, cfg, progress=False, chain_mode=mode, compute_dtype="bfloat16")
        np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
        assert a.llc_mean == b.llc_mean


def test_bad_compute_dtype_rejected():
    params = {k: v.float() for k, v in _quadratic_params().items()}
    cfg = SGLDConfig(epsilon=1e-4, nbeta=10.0, num_chains=1, num_draws=2, num_burnin=0)
    for bad in ("float16", "bf16", torch.bfloat16, "float32"):
        with pytest.raises(ValueError, match="compute_dtype must be None .* or 'bfloat16'"):
            estimate_llc(_quadratic, params, cfg, progress=False, compute_dtype=bad)
    with pytest.raises(ValueError, match="needs float32 sampled weights"):
        estimate_llc(_quadratic, _quadratic_params(), cfg, progress=False, compute_dtype="bfloat16")  # float64


def test_auto_compute_dtype_follows_the_hardware():
    from stagewise.llc import fast_bf16_support, resolve_compute_dtype

    amd, intel = "AuthenticAMD", "GenuineIntel"
    assert resolve_compute_dtype("auto", cpu_flags={"avx2", "avx512_bf16"}, cpu_vendor=amd) == "bfloat16"  # Zen 4
    assert resolve_compute_dtype("auto", cpu_flags={"avx512_bf16", "amx_bf16"}, cpu_vendor=intel) == "bfloat16"
    # Intel AVX512-BF16 without AMX: vdpbf16ps does no more per cycle than fp32 FMAs (measured 0.88x)
    assert resolve_compute_dtype("auto", cpu_flags={"avx512f", "avx512_bf16"}, cpu_vendor=intel) is None
    ok, reason = fast_bf16_support("cpu", cpu_flags={"avx512_bf16"}, cpu_vendor=intel)
    assert not ok and "no AMX" in reason
    assert resolve_compute_dtype("auto", cpu_flags={"avx2", "fma"}, cpu_vendor=amd) is None
    ok, reason = fast_bf16_support("cpu", cpu_flags={"avx2"}, cpu_vendor=amd)
    assert not ok and "no bf16 dot-product" in reason
    assert resolve_compute_dtype("float32") is None and resolve_compute_dtype(None) is None
    assert resolve_compute_dtype("bfloat16", cpu_flags=set()) == "bfloat16"  # explicit request wins
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        resolve_compute_dtype("fp16")


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_chains_follow_eq8_bit_for_bit_across_several_tensors(mode):
    """The engine's update, against eq. (8) written out naively with the same per-chain noise
    streams: Δw = −ε/2 (nβ ∇ℓ(w) + γ (w − w*)) + N(0, ε), every sampled tensor of a dict of several
    (so the flat vector's split into tensors, and its gradient, are exercised), every step's loss
    equal to the last bit."""
    from stagewise.llc.sampler import derive_seed

    g = torch.Generator().manual_seed(3)
    w_star = {"a": torch.randn(3, 4, generator=g, dtype=torch.float64), "b": torch.randn(5, generator=g, dtype=torch.float64),
              "c": torch.randn(2, 2, generator=g, dtype=torch.float64)}

    def loss(p, batch):
        return (p["a"].sum(0) ** 2).sum() * 0.1 + (p["b"] ** 4).sum() * 0.01 + (p["a"][:2, :2] * p["c"]).sum() ** 2

    cfg = SGLDConfig(epsilon=1e-3, gamma=50.0, nbeta=7.0, num_chains=2, num_draws=6, num_burnin=2, seed=11)
    res = estimate_llc(loss, w_star, cfg, progress=False, chain_mode=mode)
    flat_star = torch.cat([t.reshape(-1) for t in w_star.values()])
    sizes, shapes = [t.numel() for t in w_star.values()], [t.shape for t in w_star.values()]
    for c in range(2):
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "noise", c))
        w, trace = flat_star.clone(), []
        for _ in range(cfg.num_steps):
            x = w.clone().requires_grad_(True)
            params = {n: piece.reshape(s) for n, piece, s in zip(w_star, torch.split(x, sizes), shapes)}
            value = loss(params, None)
            (grad,) = torch.autograd.grad(value, x)
            trace.append(value.item())
            noise = torch.randn(w.numel(), generator=gen, dtype=w.dtype)
            w = w + (-cfg.epsilon / 2 * (cfg.nbeta * grad + cfg.gamma * (w - flat_star)) + math.sqrt(cfg.epsilon) * noise)
        np.testing.assert_array_equal(res.burnin_loss_trace[c], trace[:cfg.num_burnin])
        np.testing.assert_array_equal(res.loss_trace[c], trace[cfg.num_burnin:])
