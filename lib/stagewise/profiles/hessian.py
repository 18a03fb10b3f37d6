"""Profiles for the Hessian comparison (notebook 05)."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["HessianProfile", "PROFILES", "TOY_SGLD"]

# SGLD settings per toy potential (nβ, ε) with γ = 1: nβ large against γ so the localized
# posterior's LLC is within a few % of λ, and ε nβ ℓ'' ≲ 0.1 so discretisation bias stays small
# (the same settings the LLC engine's tests validate against the exact values).
TOY_SGLD = {
    "quadratic_3d": (1e4, 4e-6),
    "quadratic_unused_3d": (1e4, 4e-6),
    "quadratic_quartic_3d": (1e3, 4e-5),
    "quadratic": (1e4, 4e-6),
    "quartic": (1e3, 1e-4),
    "degenerate": (1e4, 3e-4),
    "lau": (1e4, 3e-4),
}


@dataclass(frozen=True)
class HessianProfile:
    name: str
    toy_chains: int = 64
    toy_draws: int = 1500
    num_probes: int = 100  # Hutchinson probes per checkpoint
    lanczos_tol: float = 1e-3
    hessian_batch: int = 1024  # m of App. C.2.2
    num_checkpoints: int = 190  # regression checkpoints at which curvature is measured

    def __post_init__(self):
        for f in ("toy_chains", "toy_draws", "num_probes", "hessian_batch", "num_checkpoints"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if not 0 < self.lanczos_tol < 1:
            raise ValueError(f"lanczos_tol must be in (0, 1), got {self.lanczos_tol}")


PROFILES = {
    "paper": HessianProfile(name="paper"),
    "cpu": HessianProfile(name="cpu", num_probes=50, hessian_batch=1024, num_checkpoints=40),
    "smoke": HessianProfile(name="smoke", toy_chains=4, toy_draws=100, num_probes=4, hessian_batch=64,
                            num_checkpoints=10, lanczos_tol=1e-2),
}

# long: nothing more to show than cpu: the cpu settings under the long name
PROFILES["long"] = replace(PROFILES["cpu"], name="long")
