"""Profiles for the transient-ridge setting (notebook 03; [C]).

One training run per task diversity M (the ``m_grid`` plus M = ∞), all with the same model,
optimiser, batch and seed; only the task prior q_M changes. The nested task sets T_M are prefixes
of one task sequence drawn from ``task.task_seed`` (``stagewise.data.regression.task_set``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stagewise.data.regression import RegressionTask
from stagewise.llc import CalibrationSettings, SGLDConfig
from stagewise.models.regression import RegressionTransformerConfig
from stagewise.train import TrainConfig

__all__ = ["TransientRidgeProfile", "PROFILES", "sqrt2_grid"]


def sqrt2_grid(max_m: int, min_m: int = 1) -> tuple[int, ...]:
    """Task diversities round(2^(k/2)) from ``min_m`` to ``max_m``: 1, 2, 3, 4, 6, 8, 11, 16, 23, 32,
    45, 64, 91, 128, 181, 256, 362, ... (√2-spaced; Carroll et al. write 182 for 2^7.5 ≈ 181.02)."""
    if not isinstance(max_m, int) or max_m < 1:
        raise ValueError(f"max_m must be an integer >= 1, got {max_m!r}")
    if not isinstance(min_m, int) or not 1 <= min_m <= max_m:
        raise ValueError(f"min_m must be an integer in [1, max_m = {max_m}], got {min_m!r}")
    grid, k = [], 0
    while round(2 ** (k / 2)) <= max_m:
        m = int(round(2 ** (k / 2)))
        if m >= min_m and m not in grid:
            grid.append(m)
        k += 1
    return tuple(grid)


def _paper_model() -> RegressionTransformerConfig:
    # Carroll et al. give only "2 layers, 2.65 million parameters" (their App. A is not in our copy).
    # Our layout with d = 256, 8 heads and d_mlp = 2048 has 2,641,417 parameters at D = 8, K = 16.
    return RegressionTransformerConfig(task_size=8, max_examples=16, n_layers=2, n_heads=8, d_embed=256, d_mlp=2048)


@dataclass(frozen=True)
class TransientRidgeProfile:
    """Everything notebook 03 needs to know about scale.

    ``task`` is the template task (D, K, σ², task seed; its ``num_tasks`` must be None: each run
    sets its own M). ``seed`` is the training seed of every run (initialisation and data stream).
    ``num_eval`` sequences make each fixed test set (q_∞ for the OOD loss, q_M for in-distribution
    losses and distances); ``pca_batch`` = B sequences from q(S | t_1) feed the joint trajectory
    PCA. ``sgld`` / ``num_sgld_samples``: the LLC of each fully trained model on its own q_M.
    ``smoothing`` is the Gaussian width (in checkpoints) of the light smoothing applied to loss and
    PC curves before reading t_crit off them (the paper's figures are "lightly smoothed").
    """

    name: str
    task: RegressionTask = field(default_factory=lambda: RegressionTask(task_size=8, max_examples=16))
    model: RegressionTransformerConfig = field(default_factory=lambda: _paper_model())
    train: TrainConfig = field(default_factory=TrainConfig)
    batch_size: int = 256
    seed: int = 0
    m_grid: tuple[int, ...] = sqrt2_grid(2**15)  # finite M; M = ∞ is always added
    num_eval: int = 2048
    pca_batch: int = 512
    num_pca_components: int = 4
    sgld: SGLDConfig = SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=8, num_draws=2000, num_burnin=500,
                                             batch_size=1024)
    num_sgld_samples: int = 2**20
    sgld_loss: str = "predictions_only"  # LLC fast path, as in RegressionProfile
    train_loss: str = "full"  # the training loss's forward, as in RegressionProfile (key when not "full")
    sgld_dtype: str = "auto"
    smoothing: float = 1.0
    executor: str = "serial"  # how the notebook trains the runs: "serial" or "processes" (one per core)
    # SGLD calibration (App. D.3.3; notebook 03's section, stagewise.transient_ridge.final_llc_calibration)
    # at M = ∞ and the M of the largest LLC: ε at 0.3x-10x and nβ at 0.3x-3x the profile's, one chain
    # of (burn-in + 100) steps per cell, one chain 5x the profile's draws. Cost at `cpu` (d = 32
    # model, ~5 ms per chain-step): 2 x (12 x 200 + 1,600) steps ≈ 40 s. Not part of any cache key.
    sgld_calibration: CalibrationSettings = CalibrationSettings(epsilon_factors=(0.3, 1.0, 3.0, 10.0),
                                                                nbeta_factors=(0.3, 1.0, 3.0), num_draws=100,
                                                                long_factor=5, num_checkpoints=1)

    def __post_init__(self):
        from stagewise.profiles.regression import _check_sgld_path, _check_train_loss

        _check_sgld_path(self.sgld_loss, self.sgld_dtype)
        _check_train_loss(self.train_loss)
        if not self.m_grid or any(not isinstance(m, int) or m < 1 for m in self.m_grid):
            raise ValueError(f"m_grid must hold task counts M >= 1 (integers), got {self.m_grid}")
        if list(self.m_grid) != sorted(set(self.m_grid)):
            raise ValueError(f"m_grid must be strictly increasing, got {self.m_grid}")
        if self.task.num_tasks is not None:
            raise ValueError("task.num_tasks must be None in the profile: each run sets its own M from m_grid")
        if self.task.task_size != self.model.task_size or self.task.max_examples != self.model.max_examples:
            raise ValueError(
                f"task (D={self.task.task_size}, K={self.task.max_examples}) and model "
                f"(D={self.model.task_size}, K={self.model.max_examples}) must agree on D and K")
        if not self.task.noise_variance > 0:
            raise ValueError(f"task.noise_variance (σ²) must be > 0 for the ideal predictors, got {self.task.noise_variance}")
        for name in ("batch_size", "num_eval", "pca_batch", "num_pca_components", "num_sgld_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.executor not in ("serial", "processes"):
            raise ValueError(f"executor must be 'serial' or 'processes', got {self.executor!r}")
        if self.smoothing < 0:
            raise ValueError(f"smoothing must be >= 0 checkpoints, got {self.smoothing}")

    @property
    def task_diversities(self) -> tuple[int | None, ...]:
        """The M of every run, finite ones first, then None for M = ∞."""
        return (*self.m_grid, None)


PROFILES = {
    # Carroll et al.'s data and grid with a 2.64M-parameter 2-layer model; their optimiser settings are
    # in an appendix missing from our copy, so these are Raventós et al.'s (Adam, one-cycle, batch 256,
    # 500k steps) with a max lr of 1e-3 for the wider model.
    # LLC in fp32 like the other paper profiles (sgld_dtype="auto" would take bf16 on a recent GPU)
    "paper": TransientRidgeProfile(name="paper", train=TrainConfig(num_steps=500_000, lr=1e-3), sgld_dtype="float32"),
    # cpu: chosen by pilot runs on the 2-core machine (OOD loss of M = 4...64 and ∞ over training).
    # D = 2: no rise after the minimum for M = 8-32 (5k-15k steps). K = 16 showed the rise too but
    # trains at ~45 steps/s against ~105 at K = 8; d = 64 ran at ~70-90 against ~150 for the same
    # curves. One-cycle schedules damp the late rise (M = 16: none over 5k steps, +0.03 over 15k),
    # a constant lr of 3e-3 keeps it (M = 16: OOD 1.75 at step 2.1k, 1.89 at 10k). With these
    # settings the 13 runs train in ~14 min on 2 single-thread processes.
    "cpu": TransientRidgeProfile(
        name="cpu",
        task=RegressionTask(task_size=3, max_examples=8),
        model=RegressionTransformerConfig(task_size=3, max_examples=8, n_layers=2, n_heads=4, d_embed=32, d_mlp=64),
        train=TrainConfig(num_steps=10_000, lr=3e-3, schedule="constant", num_linear=50, num_log=50,
                          resume_every=2_000),
        batch_size=128,
        # trained through the predictions-only forward, as the regression `cpu` profile (a step 1.12x
        # faster at this model and batch, benchmarks/results/training_loss_path.json)
        train_loss="predictions_only",
        m_grid=sqrt2_grid(64),
        num_eval=4096,
        pca_batch=512,
        sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=4, num_draws=300, num_burnin=100, batch_size=256),
        num_sgld_samples=2**16,
        smoothing=1.0,
        executor="processes",
    ),
    "smoke": TransientRidgeProfile(
        name="smoke",
        task=RegressionTask(task_size=2, max_examples=4),
        model=RegressionTransformerConfig(task_size=2, max_examples=4, n_layers=1, n_heads=2, d_embed=8, d_mlp=8),
        train=TrainConfig(num_steps=40, num_linear=8, num_log=8, resume_every=20),
        batch_size=16,
        m_grid=(1, 2, 4),
        num_eval=64,
        pca_batch=16,
        sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=1, num_draws=10, num_burnin=5, batch_size=16),
        num_sgld_samples=128,
        sgld_calibration=CalibrationSettings(epsilon_factors=(1.0, 10.0), nbeta_factors=(1.0,), num_draws=10,
                                             long_factor=2, num_checkpoints=1),
    ),
}

# long: nothing more to show than cpu: the cpu settings under the long name
PROFILES["long"] = replace(PROFILES["cpu"], name="long")
