"""Profiles for the transient-ridge setting (notebook 03; shared/transient-ridge.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TransientRidgeProfile", "PROFILES", "sqrt2_grid"]


def sqrt2_grid(max_m: int) -> tuple[int, ...]:
    """Task diversities 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, ... (≈√2-spaced) up to ``max_m``."""
    if max_m < 1:
        raise ValueError(f"max_m must be >= 1, got {max_m}")
    grid, k = [], 0
    while round(2 ** (k / 2)) <= max_m:
        m = int(round(2 ** (k / 2)))
        if m not in grid:
            grid.append(m)
        k += 1
    return tuple(grid)


@dataclass(frozen=True)
class TransientRidgeProfile:
    name: str
    task_size: int = 8  # D
    max_examples: int = 16  # K
    noise_variance: float = 0.125
    m_grid: tuple[int, ...] = sqrt2_grid(2**15)  # finite M; M = ∞ is always added
    num_eval: int = 2048
    task_seed: int = 0

    def __post_init__(self):
        if not self.m_grid or min(self.m_grid) < 1:
            raise ValueError(f"m_grid must hold task counts M >= 1, got {self.m_grid}")
        if self.task_size < 1 or self.max_examples < 1:
            raise ValueError("task_size (D) and max_examples (K) must be >= 1")
        if self.num_eval < 1:
            raise ValueError(f"num_eval must be >= 1, got {self.num_eval}")


PROFILES = {
    "paper": TransientRidgeProfile(name="paper"),
    # The task-diversity threshold shrinks with D, so the cpu profile works at D = 4, K = 8.
    "cpu": TransientRidgeProfile(name="cpu", task_size=4, max_examples=8, m_grid=sqrt2_grid(2**10), num_eval=4096),
    "smoke": TransientRidgeProfile(name="smoke", task_size=2, max_examples=4, m_grid=(1, 4, 16), num_eval=64),
}
