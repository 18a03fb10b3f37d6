"""Profiles for the in-context linear-regression setting (notebooks 02 and 05; SPEC.md §3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.data.regression import RegressionTask
from stagewise.models.regression import RegressionTransformerConfig
from stagewise.train import TrainConfig

__all__ = ["RegressionProfile", "PROFILES"]


@dataclass(frozen=True)
class RegressionProfile:
    """Everything a regression notebook needs to know about scale.

    ``seeds`` are training seeds (model init and data stream). Analysis sizes (number of
    checkpoints analysed, evaluation batch) are here too so one profile fixes a whole notebook.
    """

    name: str
    task: RegressionTask = field(default_factory=RegressionTask)
    model: RegressionTransformerConfig = field(default_factory=RegressionTransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    batch_size: int = 256
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    num_eval: int = 2048  # N_test, sequences in the fixed evaluation set
    num_analysis_checkpoints: int = 190  # checkpoints the LLC / probes are run at

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.seeds:
            raise ValueError("seeds must name at least one training seed")
        if self.num_eval < 1:
            raise ValueError(f"num_eval must be >= 1, got {self.num_eval}")
        if self.num_analysis_checkpoints < 2:
            raise ValueError(f"num_analysis_checkpoints must be >= 2, got {self.num_analysis_checkpoints}")
        if self.task.task_size != self.model.task_size or self.task.max_examples != self.model.max_examples:
            raise ValueError(
                f"task (D={self.task.task_size}, K={self.task.max_examples}) and model "
                f"(D={self.model.task_size}, K={self.model.max_examples}) must agree on D and K"
            )


PROFILES = {
    # Paper: 500k steps of batch 256, Adam 3e-3 one-cycle, 190 checkpoints, seeds 0-4 (Table D.2).
    "paper": RegressionProfile(name="paper"),
    # cpu: chosen by measurement (README): the paper's model and batch at a shorter one-cycle
    # schedule, which compresses the stages in step count.
    "cpu": RegressionProfile(
        name="cpu",
        train=TrainConfig(num_steps=10_000, resume_every=1_000),
        seeds=(0, 1, 2, 3, 4),
        num_analysis_checkpoints=60,
    ),
    "smoke": RegressionProfile(
        name="smoke",
        model=RegressionTransformerConfig(),
        train=TrainConfig(num_steps=60, num_linear=10, num_log=10, resume_every=20),
        batch_size=32,
        seeds=(0,),
        num_eval=64,
        num_analysis_checkpoints=8,
    ),
}
