"""Tests for stagewise.hessian and stagewise.potentials: against exact Hessians and known answers."""

import math

import pytest
import torch

from stagewise.hessian import (
    exact_hessian,
    hessian_spectrum,
    hessian_statistics,
    hutchinson_trace,
    hvp,
    module_hessian_statistics,
    top_eigenvalues,
)
from stagewise.potentials import FIGURE_2, POTENTIALS, quadratic_form

DT = torch.float64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only add overhead (30x on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quartic_problem():
    """ℓ = ½ xᵀAx + Σ y⁴ + (x·y₀)² with A SPD: a dense, non-diagonal Hessian with a spread spectrum."""
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(12, 12, generator=gen, dtype=DT)
    A = B @ B.T / 12 + torch.diag(torch.linspace(0.1, 6, 12, dtype=DT))

    def loss_fn(p, batch):
        return 0.5 * p["x"] @ A @ p["x"] + (p["y"] ** 4).sum() + (p["x"][:4] @ p["y"][0]) ** 2

    params = {"x": torch.randn(12, generator=gen, dtype=DT), "y": torch.randn(3, 4, generator=gen, dtype=DT)}
    return loss_fn, params


def mlp_problem():
    """A 3-8-2 tanh MLP (50 parameters) with an MSE loss on random data."""
    gen = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT))
    x, y = torch.randn(32, 3, generator=gen, dtype=DT), torch.randn(32, 2, generator=gen, dtype=DT)
    loss = lambda forward, batch: ((forward(batch[0]) - batch[1]) ** 2).mean()  # noqa: E731
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_fn(p, batch):
        return loss(lambda inp: torch.func.functional_call(model, p, (inp,)), batch)

    return model, loss, loss_fn, params, (x, y)


@pytest.fixture(scope="module")
def quartic():
    loss_fn, params = quartic_problem()
    return loss_fn, params, exact_hessian(loss_fn, params)


@pytest.fixture(scope="module")
def mlp():
    model, loss, loss_fn, params, batch = mlp_problem()
    return model, loss, loss_fn, params, batch, exact_hessian(loss_fn, params, batch)


def test_exact_hessian_matches_autograd(quartic):
    loss_fn, params, H = quartic
    flat = torch.cat([params["x"], params["y"].reshape(-1)])
    unflat = lambda v: {"x": v[:12], "y": v[12:].view(3, 4)}  # noqa: E731
    ref = torch.autograd.functional.hessian(lambda v: loss_fn(unflat(v), None), flat)
    torch.testing.assert_close(H, ref)


@pytest.mark.parametrize("problem", ["quartic", "mlp"])
def test_hvp_equals_exact_hessian_times_vector(problem, quartic, mlp):
    if problem == "quartic":
        loss_fn, params, H = quartic
        batch = None
    else:
        _, _, loss_fn, params, batch, H = mlp
    gen = torch.Generator().manual_seed(2)
    v = {k: torch.randn(p.shape, generator=gen, dtype=DT) for k, p in params.items()}
    Hv = hvp(loss_fn, params, batch, v)
    flat_v = torch.cat([t.reshape(-1) for t in v.values()])
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in Hv.values()]), H @ flat_v)


@pytest.mark.parametrize("problem", ["quartic", "mlp"])
def test_hutchinson_within_standard_errors(problem, quartic, mlp):
    if problem == "quartic":
        loss_fn, params, H = quartic
        batch = None
    else:
        _, _, loss_fn, params, batch, H = mlp
    est = hutchinson_trace(loss_fn, params, batch, num_probes=200, seed=3, chunk_size=50)
    assert est.num_probes == 200 and est.stderr > 0
    # Rademacher variance is 2 Σ_{i≠j} H_ij²: the stderr must be the right size, and cover the truth.
    expected_stderr = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum()) / 200)
    assert 0.7 < est.stderr / expected_stderr < 1.3
    assert abs(est.mean - float(H.trace())) < 4 * est.stderr


@pytest.mark.parametrize("problem", ["quartic", "mlp"])
def test_lanczos_top_k_matches_eigvalsh(problem, quartic, mlp):
    if problem == "quartic":
        loss_fn, params, H = quartic
        batch = None
    else:
        _, _, loss_fn, params, batch, H = mlp
    truth = torch.linalg.eigvalsh(H).flip(0)[:3]
    res = top_eigenvalues(loss_fn, params, batch, k=3, tol=1e-8, max_iter=60, seed=0)
    assert res.converged and res.iterations <= 60 and res.num_hvps == res.iterations + 3
    torch.testing.assert_close(res.eigenvalues, truth, rtol=1e-4, atol=0)
    assert (res.residuals <= 1e-8 * truth.abs().max()).all()
    # Ritz vectors are unit eigenvectors: H y ≈ θ y.
    for theta, y in zip(res.eigenvalues, res.eigenvectors):
        torch.testing.assert_close(H @ y, theta * y, atol=1e-6, rtol=0)


def test_lanczos_largest_magnitude_and_unconverged_flag(quartic):
    loss_fn, params, H = quartic
    indefinite = lambda p, b: loss_fn(p, b) - 3.0 * (p["x"] ** 2).sum()  # noqa: E731
    eig = torch.linalg.eigvalsh(exact_hessian(indefinite, params))
    lm = top_eigenvalues(indefinite, params, k=1, tol=1e-8, max_iter=60, which="LM")
    assert lm.converged and lm.top == pytest.approx(float(eig[eig.abs().argmax()]), rel=1e-4)
    stopped = top_eigenvalues(loss_fn, params, k=2, tol=1e-12, max_iter=3)
    assert not stopped.converged and stopped.iterations == 3


def test_module_statistics_match_functional_and_leave_model_untouched(mlp):
    model, loss, loss_fn, params, batch, H = mlp
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = module_hessian_statistics(model, loss, batch, num_probes=20, k=2, tol=1e-8, max_iter=60, seed=5)
    ref = hessian_statistics(loss_fn, params, batch, num_probes=20, k=2, tol=1e-8, max_iter=60, seed=5)
    assert stats.num_params == 50
    assert stats.trace == ref.trace
    torch.testing.assert_close(stats.eigen.eigenvalues, ref.eigen.eigenvalues)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_parameter_subsets_are_blocks_of_the_hessian(mlp):
    _, _, loss_fn, params, batch, H = mlp
    # Flat layout: 0.weight (24), 0.bias (8), 2.weight (16), 2.bias (2).
    sub = hessian_spectrum(loss_fn, params, batch, wrt=["2.weight"], rtol=0)
    torch.testing.assert_close(sub.eigenvalues, torch.linalg.eigvalsh(H[32:48, 32:48]))
    mask = torch.zeros(8, 3, dtype=torch.bool)
    mask[2:4] = True  # rows 2-3 of the first layer (like one head's slice of a fused matrix)
    idx = torch.arange(24).view(8, 3)[2:4].reshape(-1)
    Hm = exact_hessian(loss_fn, params, batch, wrt=lambda n: n == "0.weight", param_mask={"0.weight": mask})
    torch.testing.assert_close(Hm, H[idx][:, idx])
    tr = hutchinson_trace(loss_fn, params, batch, num_probes=100, wrt="0.weight", param_mask={"0.weight": mask})
    assert abs(tr.mean - float(Hm.trace())) < 4 * tr.stderr
    top = top_eigenvalues(loss_fn, params, batch, k=1, tol=1e-10, max_iter=6, wrt="0.weight",
                          param_mask={"0.weight": mask})
    assert top.eigenvectors.shape == (1, 6) and top.top == pytest.approx(float(torch.linalg.eigvalsh(Hm)[-1]), rel=1e-6)


def test_reproducible_under_seed(quartic):
    loss_fn, params, _ = quartic
    a = hutchinson_trace(loss_fn, params, num_probes=10, seed=7)
    assert a == hutchinson_trace(loss_fn, params, num_probes=10, seed=7)
    assert a != hutchinson_trace(loss_fn, params, num_probes=10, seed=8)
    chunked = hutchinson_trace(loss_fn, params, num_probes=10, seed=7, chunk_size=4)  # same probes, vmapped
    assert chunked.mean == pytest.approx(a.mean, rel=1e-12) and chunked.stderr == pytest.approx(a.stderr, rel=1e-9)
    r1 = top_eigenvalues(loss_fn, params, k=2, tol=1e-3, max_iter=5, seed=7)
    r2 = top_eigenvalues(loss_fn, params, k=2, tol=1e-3, max_iter=5, seed=7)
    assert torch.equal(r1.eigenvalues, r2.eigenvalues) and torch.equal(r1.eigenvectors, r2.eigenvectors)


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_potentials_hessian_rank_trace_and_top(name):
    p = POTENTIALS[name]
    assert float(p.fn(p.params(), None)) == 0.0  # w* is a minimum with ℓ(w*) = 0
    spec = hessian_spectrum(p.fn, p.params())
    assert spec.rank == p.hessian_rank
    assert spec.trace == pytest.approx(2.0 * p.hessian_rank)  # every quadratic term here is a w_i²
    top = top_eigenvalues(p.fn, p.params(), k=p.dim, tol=1e-10, max_iter=10)
    assert top.converged
    torch.testing.assert_close(top.eigenvalues, spec.eigenvalues.flip(0), atol=1e-9, rtol=0)


def test_hessian_cannot_tell_quartic_from_degenerate_but_llc_can():
    """App. A.1: at w* = 0 both Hessians vanish identically; λ = 1/2 vs 1/4."""
    quartic, degenerate = POTENTIALS["quartic"], POTENTIALS["degenerate"]
    for p in (quartic, degenerate):
        H = exact_hessian(p.fn, p.params())
        assert torch.equal(H, torch.zeros(2, 2, dtype=DT))
        assert hessian_spectrum(p.fn, p.params()).rank == 0
        assert hutchinson_trace(p.fn, p.params(), num_probes=5).mean == 0.0
        assert top_eigenvalues(p.fn, p.params()).top == 0.0
    assert (quartic.llc, degenerate.llc) == (0.5, 0.25)
    assert [POTENTIALS[n].llc for n in FIGURE_2] == [1.0, 0.5, 0.25, 0.25]


def test_potentials_broadcast_over_grids_and_lau_has_second_minimum():
    W1, W2 = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 4), indexing="ij")
    for name in FIGURE_2:
        assert POTENTIALS[name].fn({"w": torch.stack([W1, W2], -1)}).shape == (5, 4)
    lau = POTENTIALS["lau"]
    assert float(lau.fn({"w": torch.tensor([1.0, 0.0])})) == 0.0
    curved = quadratic_form([10.0, 0.5, 0.0])
    assert curved.llc == 1.0 and hessian_spectrum(curved.fn, curved.params()).trace == pytest.approx(21.0)


def test_bad_inputs_name_the_parameter(quartic):
    loss_fn, params, _ = quartic
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_trace(loss_fn, params, num_probes=0)
    with pytest.raises(ValueError, match="chunk_size"):
        hutchinson_trace(loss_fn, params, chunk_size=0)
    with pytest.raises(ValueError, match="k = 25 exceeds"):
        top_eigenvalues(loss_fn, params, k=25)
    with pytest.raises(ValueError, match="tol"):
        top_eigenvalues(loss_fn, params, tol=0)
    with pytest.raises(TypeError, match="params"):
        hutchinson_trace(loss_fn, [params["x"]])
    with pytest.raises(TypeError, match="params"):
        top_eigenvalues(loss_fn, {"x": params["x"], "y": 3.0})
    with pytest.raises(TypeError, match="vector"):
        hvp(loss_fn, params, None, [params["x"]])
    with pytest.raises(ValueError, match="wrt"):
        hutchinson_trace(loss_fn, params, wrt=["z"])
    with pytest.raises(ValueError, match="param_mask"):
        hutchinson_trace(loss_fn, params, wrt="x", param_mask={"y": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="max_dim"):
        exact_hessian(loss_fn, params, max_dim=10)
    with pytest.raises(ValueError, match="rtol"):
        hessian_spectrum(loss_fn, params, rtol=-1)


def test_toy_comparison_row_is_cached_by_potential_and_sampler(tmp_cache, monkeypatch):
    import dataclasses

    import stagewise.llc as llc_module
    from stagewise.llc import SGLDConfig
    from stagewise.potentials import toy_comparison

    sgld = SGLDConfig(epsilon=1e-4, gamma=1.0, nbeta=1e3, num_chains=4, num_draws=300, num_burnin=60, seed=0)
    row = toy_comparison(POTENTIALS["quadratic"], sgld)
    assert row["name"] == "quadratic" and row["λ (exact)"] == 1.0 and row["rank H"] == 2
    assert row["tr H"] == pytest.approx(4.0) and row["λ_max(H)"] == pytest.approx(2.0)
    assert 0.7 < row["λ̂ (SGLD)"] < 1.3  # d/2 = 1 for a full-rank quadratic
    calls = []
    real = llc_module.estimate_llc
    monkeypatch.setattr(llc_module, "estimate_llc", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert toy_comparison(POTENTIALS["quadratic"], sgld) == row  # loaded, not sampled again
    assert calls == []
    toy_comparison(POTENTIALS["quadratic"], dataclasses.replace(sgld, seed=1))
    toy_comparison(POTENTIALS["quartic"], sgld)
    assert len(calls) == 2
