"""Toy potentials with known learning coefficients (main paper Fig. 2 and App. A.1).

Each potential ℓ(w) is a pure function of a params dict ``{"w": Tensor[..., dim]}`` (leading
dimensions broadcast, so a grid of points evaluates in one call) and takes an ignored ``batch``
argument, so it plugs straight into the LLC engine and :mod:`stagewise.hessian` as a
``loss_fn(params, batch)``::

    from stagewise.potentials import POTENTIALS, FIGURE_2
    p = POTENTIALS["quartic"]                    # ℓ(w) = w1⁴ + w2⁴, λ(0) = 1/2
    p.fn(p.params(), None)                       # ℓ(w*) = 0
    p.fn({"w": torch.stack([W1, W2], -1)})       # values on a meshgrid, for contour plots

The true LLC λ(w*) and the rank of the Hessian at w* are stored with each potential. The point of
App. A.1: the Hessian sees only the quadratic part of ℓ at w*. "quartic" (w1⁴ + w2⁴, λ = 1/2) and
"degenerate" (w1² w2⁴, λ = 1/4) both have a Hessian that is identically zero at the origin (trace 0,
rank 0), yet their LLCs differ; and λ does not depend on curvature (``quadratic_form`` with any
positive coefficients has λ = d/2 while its Hessian trace is 2 Σ a_i).

All local multiplicities are 1 (Fig. 2 caption).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["Potential", "POTENTIALS", "FIGURE_2", "quadratic_form", "toy_comparison"]

PotentialFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Potential:
    """A toy population loss ℓ: R^dim → R with its exact local learning coefficient at ``w_star``.

    ``fn(params, batch=None)`` reads ``params["w"]`` of shape [..., dim] and returns shape [...].
    ``llc`` is λ(w*), ``multiplicity`` the local multiplicity m(w*), ``hessian_rank`` the rank of
    ∇²ℓ(w*) (App. A.1).
    """

    name: str
    latex: str
    fn: PotentialFn
    dim: int
    w_star: torch.Tensor
    llc: float
    hessian_rank: int
    multiplicity: int = 1

    def __post_init__(self):
        if self.w_star.shape != (self.dim,):
            raise ValueError(f"w_star of potential {self.name!r} must have shape ({self.dim},), "
                             f"got {tuple(self.w_star.shape)}")

    def params(self, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        """A fresh params dict at w*, ``{"w": w_star}`` (a copy: safe to mutate)."""
        return {"w": self.w_star.clone().to(dtype)}

    def __call__(self, params: Mapping[str, torch.Tensor], batch: Any = None) -> torch.Tensor:
        return self.fn(params, batch)


def _coords(params: Mapping[str, torch.Tensor], dim: int) -> list[torch.Tensor]:
    if not isinstance(params, Mapping) or not isinstance(params.get("w"), torch.Tensor):
        raise TypeError(f"params must be a dict {{'w': Tensor[..., {dim}]}}, got {type(params).__name__}")
    w = params["w"]
    if w.shape[-1:] != (dim,):
        raise ValueError(f"params['w'] must have last dimension {dim}, got shape {tuple(w.shape)}")
    return list(w.unbind(-1))


def quadratic_form(coefficients: Sequence[float], name: str | None = None) -> Potential:
    """ℓ(w) = Σ a_i w_i² with a_i ≥ 0: λ(0) = ½ · #{a_i > 0} whatever the curvature a_i (App. A.1)."""
    coeffs = [float(a) for a in coefficients]
    if not coeffs or any(a < 0 for a in coeffs):
        raise ValueError(f"coefficients must be a non-empty sequence of numbers >= 0, got {coefficients!r}")
    dim, used = len(coeffs), sum(a > 0 for a in coeffs)

    def fn(params, batch=None):
        return sum(a * wi**2 for a, wi in zip(coeffs, _coords(params, dim)))

    terms = " + ".join(f"{'' if a == 1 else f'{a:g}'}w_{i + 1}^2" for i, a in enumerate(coeffs) if a > 0)
    latex = f"${terms or '0'}$" + (f" in $\\mathbb{{R}}^{dim}$" if used < dim else "")
    return Potential(name or f"quadratic_form{tuple(coeffs)}", latex, fn, dim, torch.zeros(dim, dtype=torch.float64),
                     llc=used / 2, hessian_rank=used)


def _quartic(params, batch=None):
    w1, w2 = _coords(params, 2)
    return w1**4 + w2**4


def _degenerate(params, batch=None):
    w1, w2 = _coords(params, 2)
    return w1**2 * w2**4


def _lau(params, batch=None):
    w1, w2 = _coords(params, 2)
    return (w1 - 1) ** 2 * (w1**2 + w2**2) ** 4


def _quadratic_quartic_3d(params, batch=None):
    w1, w2, w3 = _coords(params, 3)
    return w1**2 + w2**4 + w3**4


def _build() -> dict[str, Potential]:
    origin2, origin3 = torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    pots = [
        # App. A.1, first list (d = 3).
        quadratic_form([1, 1, 1], name="quadratic_3d"),
        quadratic_form([1, 1, 0], name="quadratic_unused_3d"),
        Potential("quadratic_quartic_3d", "$w_1^2 + w_2^4 + w_3^4$", _quadratic_quartic_3d, 3, origin3,
                  llc=1.0, hessian_rank=1),
        # Fig. 2, left to right (d = 2, all at w* = 0).
        quadratic_form([1, 1], name="quadratic"),
        Potential("quartic", "$w_1^4 + w_2^4$", _quartic, 2, origin2, llc=0.5, hessian_rank=0),
        Potential("degenerate", "$w_1^2 w_2^4$", _degenerate, 2, origin2, llc=0.25, hessian_rank=0),
        # Lau et al. (2024): near 0, (w1 − 1)² ≈ 1 and ℓ ≈ r⁸, so λ = 2/8; w = (1, 0) is another minimum.
        Potential("lau", "$(w_1 - 1)^2 (w_1^2 + w_2^2)^4$", _lau, 2, origin2, llc=0.25, hessian_rank=0),
    ]
    return {p.name: p for p in pots}


POTENTIALS: dict[str, Potential] = _build()
"""Every toy potential of App. A.1, by name."""

FIGURE_2: tuple[str, ...] = ("quadratic", "quartic", "degenerate", "lau")
"""The four potentials of Fig. 2, left to right (λ = 1, 1/2, 1/4, 1/4)."""


# Bump when a potential's function or toy_comparison's row changes: cached rows are then recomputed.
TOY_CACHE_VERSION = 1


def toy_comparison(pot: Potential, sgld) -> dict[str, Any]:
    """One row of Fig. 2's table for ``pot``: exact λ, the SGLD estimate λ̂ ± s.e. with ``sgld``
    (an :class:`stagewise.llc.SGLDConfig`), and the Hessian at w* (trace, top eigenvalue, rank).
    Cached by the potential (name, formula, w*, λ) and the SGLD settings: SGLD on a 2-parameter
    potential is overhead-bound (~1 min for the four of Fig. 2), its result fixed by the seed."""
    from stagewise.cache import cached_value, tensor_digest
    from stagewise.hessian import hessian_spectrum
    from stagewise.llc import estimate_llc

    def compute() -> dict[str, Any]:
        llc = estimate_llc(pot.fn, pot.params(), sgld, progress=False)
        spec = hessian_spectrum(pot.fn, pot.params())
        return {"potential": pot.latex, "name": pot.name, "λ (exact)": pot.llc, "λ̂ (SGLD)": llc.llc_mean,
                "λ̂ s.e.": llc.llc_sem, "tr H": float(spec.eigenvalues.sum()),
                "λ_max(H)": float(spec.eigenvalues.max()), "rank H": spec.rank, "flags": llc.diagnostics or ""}

    key = {"version": TOY_CACHE_VERSION, "name": pot.name, "latex": pot.latex, "w_star": tensor_digest(pot.w_star),
           "llc": pot.llc, "sgld": sgld}
    return cached_value("toy-potentials", key, compute)
