"""Profiles for the refined-LLC notebook (04; shared/refined-llc.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.llc import SGLDConfig

__all__ = ["RefinedLLCProfile", "PROFILES"]


@dataclass(frozen=True)
class RefinedLLCProfile:
    """Per-head weight-refined LLC settings. ``language`` names the language profile whose trained
    model (notebook 01's cache) is analysed; ``num_checkpoints`` how many of its checkpoints."""

    name: str
    language: str
    sgld: SGLDConfig = field(default_factory=lambda: SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0,
                                                                num_chains=4, num_draws=200, num_burnin=0,
                                                                batch_size=100, seed=0))
    num_checkpoints: int = 50

    def __post_init__(self):
        if self.num_checkpoints < 1:
            raise ValueError(f"num_checkpoints must be >= 1, got {self.num_checkpoints}")


PROFILES = {
    # Wang et al.: step size 1e-3, γ = 200, 4 chains x 200 draws, nβ ≈ 23.
    "paper": RefinedLLCProfile(name="paper", language="paper"),
    # cpu: 16 heads x 2 chains x 60 SGLD steps (batch 4 contexts) at 2 checkpoints: a first look,
    # not the paper's per-head curves (see the README for its measured time).
    "cpu": RefinedLLCProfile(name="cpu", language="cpu",
                             sgld=SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0, num_chains=2, num_draws=50,
                                             num_burnin=10, batch_size=4, seed=0),
                             num_checkpoints=2),
    "smoke": RefinedLLCProfile(name="smoke", language="smoke",
                               sgld=SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0, num_chains=1, num_draws=5,
                                               num_burnin=0, batch_size=4, seed=0),
                               num_checkpoints=2),
}
