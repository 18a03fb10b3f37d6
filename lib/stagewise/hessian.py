"""Hessian statistics of a loss at w*: curvature, to contrast with the LLC's degeneracy.

Main paper §7 ("the Hessian trace or maximum eigenvalues quantify the curvature of a critical point
but ignore its degenerate dimensions"), Fig. 6b and App. C.2.2 (trace and top eigenvalue over
training on a batch of m = 1024, there with PyHessian), App. A.1 (toy potentials whose Hessians
cannot be told apart while their LLCs differ; see :mod:`stagewise.potentials`).

Everything works on a pure ``loss_fn(params: dict[str, Tensor], batch) -> scalar`` (the LLC engine's
convention) and, through ``torch.func.functional_call``, on ``nn.Module``s
(:func:`module_hessian_statistics`). The Hessian is never formed except by :func:`exact_hessian`:

* :func:`hvp` — H v by forward-over-reverse differentiation, ``jvp(grad(ℓ))`` (≈ 4 gradients measured,
  10-60x cheaper than reverse-over-reverse here; benchmarks/results/hessian_cost.md);
* :func:`hutchinson_trace` — tr H ≈ mean_i zᵢᵀ H zᵢ over Rademacher probes zᵢ, with its standard error;
* :func:`top_eigenvalues` — top-k eigenvalues by Lanczos with full reorthogonalisation, stopping on
  the residual ‖H y − θ y‖ ≤ tol · max|θ| and reporting whether it converged;
* :func:`exact_hessian`, :func:`hessian_spectrum` — the dense Hessian, its spectrum and rank, for
  small parameter counts (toy potentials, tests).

``wrt`` restricts every statistic to some parameter tensors (e.g. one attention head's weights, for
per-head traces) and ``param_mask`` to some entries of them: the statistics are those of the block
P H P of the Hessian, all other weights held at w*. Randomness comes from a ``torch.Generator``
seeded by ``seed``, so every estimate is reproducible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.func import grad, jvp

__all__ = [
    "TraceEstimate",
    "EigenResult",
    "HessianSpectrum",
    "HessianStatistics",
    "hvp",
    "hutchinson_trace",
    "top_eigenvalues",
    "exact_hessian",
    "hessian_spectrum",
    "hessian_statistics",
    "module_hessian_statistics",
]

log = logging.getLogger(__name__)

LossFn = Callable[[dict[str, torch.Tensor], Any], torch.Tensor]
Wrt = str | Sequence[str] | Callable[[str], bool] | None


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr H: ``mean`` ± ``stderr`` (std of the probe values / √num_probes)."""

    mean: float
    stderr: float
    num_probes: int

    def __str__(self) -> str:
        return f"{self.mean:.6g} ± {self.stderr:.2g} ({self.num_probes} probes)"


@dataclass(frozen=True)
class EigenResult:
    """Top-k eigenvalues (descending), Ritz vectors [k, n] and true residuals ‖H y − θ y‖.

    ``converged`` is True only if every residual is ≤ ``tol`` · max|θ|; ``iterations`` counts Lanczos
    steps and ``num_hvps`` all Hessian-vector products (iterations + k for the residual check).
    """

    eigenvalues: torch.Tensor
    converged: bool
    iterations: int
    residuals: torch.Tensor
    eigenvectors: torch.Tensor
    num_hvps: int
    tol: float

    @property
    def top(self) -> float:
        return float(self.eigenvalues[0])


@dataclass(frozen=True)
class HessianSpectrum:
    """All eigenvalues (ascending, float64) of a dense Hessian, and its rank at relative tolerance ``rtol``."""

    eigenvalues: torch.Tensor
    rank: int
    rtol: float

    @property
    def trace(self) -> float:
        return float(self.eigenvalues.sum())

    @property
    def top(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def dim(self) -> int:
        return len(self.eigenvalues)


@dataclass(frozen=True)
class HessianStatistics:
    """Trace and top eigenvalues at one point (one checkpoint of Fig. 6b)."""

    trace: TraceEstimate
    eigen: EigenResult
    num_params: int


class _Flat:
    """The selected coordinates of ``params`` (names ``wrt``, entries ``param_mask``) as one vector."""

    def __init__(self, params, wrt: Wrt, param_mask: Mapping[str, torch.Tensor] | None):
        _check_params(params)
        self.params = dict(params)
        self.names = _select(self.params, wrt)
        # Masked tensors are addressed by the flat indices of their selected entries: gather/scatter
        # compose with torch.func transforms (masked_scatter does not, as of torch 2.13).
        masks = _check_masks(self.params, self.names, param_mask)
        self.index = {n: m.reshape(-1).nonzero().squeeze(1) for n, m in masks.items()}
        self.sizes = [len(self.index[n]) if n in self.index else self.params[n].numel() for n in self.names]
        self.dim = sum(self.sizes)
        if self.dim == 0:
            raise ValueError("param_mask selects no entries: the Hessian would be 0 x 0")
        first = self.params[self.names[0]]
        self.dtype, self.device = first.dtype, first.device

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [tensors[n].reshape(-1)[self.index[n]] if n in self.index else tensors[n].reshape(-1)
                 for n in self.names]
        return torch.cat(parts)

    def unflatten(self, vec: torch.Tensor, base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``vec`` written into the selected entries of ``base`` (other masked entries keep ``base``)."""
        out, chunks = {}, vec.split(self.sizes)
        for name, chunk in zip(self.names, chunks):
            ref = base[name]
            if name in self.index:
                out[name] = ref.reshape(-1).scatter(0, self.index[name], chunk).view(ref.shape)
            else:
                out[name] = chunk.view(ref.shape)
        return out

    def tangent(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.unflatten(vec, {n: torch.zeros_like(self.params[n]) for n in self.names})

    def restricted(self, loss_fn: LossFn, batch) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """ℓ as a function of the selected tensors only, the others held at w*."""
        return lambda sub: loss_fn({**self.params, **sub}, batch)

    def matvec(self, loss_fn: LossFn, batch) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ P H P v on flat vectors (forward-over-reverse)."""
        f = self.restricted(loss_fn, batch)
        primal = {n: self.params[n] for n in self.names}

        def mv(v: torch.Tensor) -> torch.Tensor:
            return self.flatten(jvp(grad(f), (primal,), (self.tangent(v),))[1])

        return mv


def _check_params(params) -> None:
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"params must be a non-empty dict[str, Tensor], got {type(params).__name__}")
    for name, value in params.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"params must be a dict[str, Tensor]; entry {name!r} is {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"params[{name!r}] must be a floating-point Tensor, got dtype {value.dtype}")


def _select(params: dict[str, torch.Tensor], wrt: Wrt) -> list[str]:
    if wrt is None:
        names = list(params)
    elif isinstance(wrt, str):
        names = [wrt]
    elif callable(wrt):
        names = [n for n in params if wrt(n)]
    else:
        names = list(wrt)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"wrt names parameters not in params: {unknown[:5]} (params has {list(params)[:5]}...)")
    if not names:
        raise ValueError("wrt selects no parameters")
    return names


def _check_masks(params, names, param_mask) -> dict[str, torch.Tensor]:
    masks = dict(param_mask or {})
    for name, mask in masks.items():
        if name not in names:
            raise ValueError(f"param_mask key {name!r} is not among the selected parameters (wrt)")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != params[name].shape:
            raise ValueError(f"param_mask[{name!r}] must be a bool Tensor of shape {tuple(params[name].shape)}")
    return masks


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def hvp(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any,
        vector: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hessian-vector product H v at ``params`` by forward-over-reverse, ``jvp(grad(ℓ))``.

    ``vector`` holds a tangent for some keys of ``params``; the Hessian is taken with respect to
    those keys only (the others held fixed), and the result has the same keys and shapes.
    """
    if not isinstance(vector, Mapping):
        raise TypeError(f"vector must be a dict[str, Tensor] keyed like params, got {type(vector).__name__}")
    flat = _Flat(params, list(vector), None)
    for name, v in vector.items():
        if not isinstance(v, torch.Tensor) or v.shape != flat.params[name].shape:
            raise ValueError(f"vector[{name!r}] must be a Tensor of shape {tuple(flat.params[name].shape)}")
    f = flat.restricted(loss_fn, batch)
    primal = {n: flat.params[n] for n in flat.names}
    return jvp(grad(f), (primal,), (dict(vector),))[1]


def hutchinson_trace(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any = None, *,
                     num_probes: int = 100, seed: int = 0, chunk_size: int = 1, wrt: Wrt = None,
                     param_mask: Mapping[str, torch.Tensor] | None = None) -> TraceEstimate:
    """Hutchinson's estimate tr H ≈ (1/N) Σ zᵢᵀ H zᵢ, zᵢ Rademacher (Yao et al. 2020, as in App. C.2.2).

    Unbiased; the standard error is the probes' sample standard deviation / √N (NaN for N = 1).
    Cost: ``num_probes`` HVPs, ``chunk_size`` of them at a time under ``torch.func.vmap`` (memory
    grows with it; worth it for small models and on GPUs). The probes depend on ``seed`` only.
    """
    num_probes = _positive_int("num_probes", num_probes)
    chunk_size = _positive_int("chunk_size", chunk_size)
    flat = _Flat(params, wrt, param_mask)
    mv = flat.matvec(loss_fn, batch)
    batched_mv = torch.func.vmap(mv) if chunk_size > 1 else lambda Z: mv(Z[0])[None]
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randint(0, 2, (num_probes, flat.dim), generator=gen, dtype=torch.int8)
    values = torch.empty(num_probes, dtype=torch.float64)
    for start in range(0, num_probes, chunk_size):
        Z = (probes[start:start + chunk_size] * 2 - 1).to(flat.dtype).to(flat.device)
        values[start:start + len(Z)] = (Z * batched_mv(Z)).sum(dim=1).double().cpu()
    stderr = float(values.std() / math.sqrt(num_probes)) if num_probes > 1 else math.nan
    return TraceEstimate(float(values.mean()), stderr, num_probes)


def top_eigenvalues(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any = None, *,
                    k: int = 1, tol: float = 1e-3, max_iter: int = 100, seed: int = 0,
                    which: str = "LA", wrt: Wrt = None,
                    param_mask: Mapping[str, torch.Tensor] | None = None) -> EigenResult:
    """Top-k eigenvalues of H by Lanczos with full reorthogonalisation (Golub & Van Loan §10.1).

    ``which="LA"`` takes the largest algebraic eigenvalues, ``"LM"`` the largest in magnitude.
    Lanczos stops once the estimated residuals of the k Ritz pairs are ≤ ``tol`` · max|θ| (then
    |θ − λ| ≤ that bound too, and usually far below it), or after ``max_iter`` steps. The returned
    residuals are recomputed with k more HVPs, and ``converged`` is judged on those; an unconverged
    result is returned with ``converged=False`` and a warning. A Krylov space that becomes invariant
    (exactly degenerate spectra, e.g. the toy potentials) restarts from a fresh random vector, so
    exactly repeated eigenvalues are found with their multiplicity. ``max_iter`` is raised to k and
    capped at the dimension n (after n steps the Ritz values are exact).
    """
    k, max_iter = _positive_int("k", k), _positive_int("max_iter", max_iter)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude), got {which!r}")
    flat = _Flat(params, wrt, param_mask)
    n = flat.dim
    if k > n:
        raise ValueError(f"k = {k} exceeds the dimension of the Hessian ({n} parameters selected)")
    max_iter = min(max(max_iter, k), n)
    mv = flat.matvec(loss_fn, batch)
    gen = torch.Generator().manual_seed(seed)
    breakdown = torch.finfo(flat.dtype).eps ** 0.75

    basis: list[torch.Tensor] = []

    def fresh_direction() -> torch.Tensor:
        # A random start orthogonal to the current basis (twice: "twice is enough").
        v = torch.randn(n, generator=gen, dtype=torch.float64).to(flat.dtype).to(flat.device)
        for _ in range(2):
            if basis:
                Q = torch.stack(basis)
                v = v - Q.T @ (Q @ v)
        return v / v.norm()

    alphas: list[float] = []
    betas: list[float] = []
    q, beta_prev = fresh_direction(), 0.0
    theta = S = idx = None
    for it in range(1, max_iter + 1):
        basis.append(q)
        w = mv(q)
        alpha = float(torch.dot(q, w))
        w = w - alpha * q - (beta_prev * basis[-2] if len(basis) > 1 else 0.0)
        Q = torch.stack(basis)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        order = theta.argsort(descending=True) if which == "LA" else theta.abs().argsort(descending=True)
        idx = order[:k]
        scale = max(float(theta.abs().max()), torch.finfo(torch.float64).tiny)
        if it == n:
            break
        if beta <= breakdown * scale:
            # Invariant Krylov subspace: its Ritz pairs are exact, but eigenvalues outside it (or
            # further copies of a repeated one) can only be reached from a new direction.
            q, beta_prev = fresh_direction(), 0.0
            betas.append(0.0)
            continue
        if len(alphas) >= k and bool((beta * S[-1, idx].abs() <= tol * scale).all()):
            break
        q, beta_prev = w / beta, beta
        betas.append(beta)

    Q = torch.stack(basis)
    vals = theta[idx]
    vecs = (S[:, idx].T.to(flat.dtype).to(flat.device)) @ Q
    residuals = torch.stack([(mv(y) - float(t) * y).norm().double() for t, y in zip(vals, vecs)])
    scale = max(float(theta.abs().max()), torch.finfo(torch.float64).tiny)
    converged = bool((residuals <= tol * scale).all())
    if not converged:
        log.warning("Lanczos did not converge in %d iterations: residuals %s > tol·max|θ| = %.3g",
                    len(alphas), residuals.tolist(), tol * scale)
    return EigenResult(vals, converged, len(alphas), residuals.cpu(), vecs, len(alphas) + k, float(tol))


def exact_hessian(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any = None, *,
                  wrt: Wrt = None, param_mask: Mapping[str, torch.Tensor] | None = None,
                  max_dim: int = 4096) -> torch.Tensor:
    """The dense Hessian [n, n] of ℓ in the flattened selected coordinates (``torch.func.hessian``).

    Refuses more than ``max_dim`` coordinates (n² memory, n HVPs); use :func:`hutchinson_trace` and
    :func:`top_eigenvalues` on real models.
    """
    flat = _Flat(params, wrt, param_mask)
    if flat.dim > max_dim:
        raise ValueError(f"exact Hessian of {flat.dim} coordinates exceeds max_dim = {max_dim} "
                         f"({flat.dim**2 * 8 / 2**30:.1f} GiB in float64); use hutchinson_trace / top_eigenvalues")
    f = flat.restricted(loss_fn, batch)
    x0 = flat.flatten(flat.params)
    H = torch.func.hessian(lambda x: f(flat.unflatten(x, flat.params)))(x0)
    return (H + H.T) / 2


def hessian_spectrum(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any = None, *,
                     rtol: float = 1e-6, wrt: Wrt = None, param_mask: Mapping[str, torch.Tensor] | None = None,
                     max_dim: int = 4096) -> HessianSpectrum:
    """Spectrum of the exact Hessian and its rank: #{|λ_i| > rtol · max|λ|} (0 for H = 0).

    The rank counts the non-degenerate directions; it cannot tell a quartic direction from a flat
    one, which is why it misses the LLC's distinctions (App. A.1).
    """
    if not (isinstance(rtol, (int, float)) and 0 <= rtol < 1):
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    H = exact_hessian(loss_fn, params, batch, wrt=wrt, param_mask=param_mask, max_dim=max_dim)
    eig = torch.linalg.eigvalsh(H.double().cpu())
    top = float(eig.abs().max())
    rank = int((eig.abs() > rtol * top).sum()) if top > 0 else 0
    return HessianSpectrum(eig, rank, float(rtol))


def hessian_statistics(loss_fn: LossFn, params: Mapping[str, torch.Tensor], batch: Any = None, *,
                       num_probes: int = 100, chunk_size: int = 1, k: int = 1, tol: float = 1e-3,
                       max_iter: int = 100, seed: int = 0, wrt: Wrt = None,
                       param_mask: Mapping[str, torch.Tensor] | None = None) -> HessianStatistics:
    """Hutchinson trace and top-k Lanczos eigenvalues at ``params`` (one point of Fig. 6b)."""
    kw = dict(seed=seed, wrt=wrt, param_mask=param_mask)
    trace = hutchinson_trace(loss_fn, params, batch, num_probes=num_probes, chunk_size=chunk_size, **kw)
    eigen = top_eigenvalues(loss_fn, params, batch, k=k, tol=tol, max_iter=max_iter, **kw)
    return HessianStatistics(trace, eigen, _Flat(params, wrt, param_mask).dim)


def module_hessian_statistics(model: torch.nn.Module, loss: Callable[[Callable[..., Any], Any], torch.Tensor],
                              batch: Any, **kwargs) -> HessianStatistics:
    """:func:`hessian_statistics` of an ``nn.Module`` at its current weights, via ``functional_call``.

    ``loss(forward, batch) -> scalar`` as in :func:`stagewise.llc.module_loss_fn`; for the regression
    transformer ``stagewise.data.regression.regression_loss`` works as it is (it only calls the
    model). ``wrt`` / ``param_mask`` use ``model.named_parameters()`` names. The model is not modified.
    """
    from stagewise.llc.module import module_loss_fn

    loss_fn, params = module_loss_fn(model, loss)
    return hessian_statistics(loss_fn, params, batch, **kwargs)
