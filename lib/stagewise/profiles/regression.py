"""Profiles for the in-context linear-regression setting (notebooks 02 and 05; docs/profiles.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stagewise.data.regression import RegressionTask
from stagewise.llc import CalibrationSettings, SGLDConfig
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
    # LLC (App. D.2.4): ε = 3e-4, β̃ = εnβ/2 = 0.01, γ̃ = εγ/2 = 0.01, i.e. nβ = γ = 66.7;
    # 10 chains x 5,000 steps (1,000 burn-in), m = 1024, on a fixed set of 2^20 samples.
    sgld: SGLDConfig = SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=10, num_draws=4000, num_burnin=1000,
                                             batch_size=1024)
    num_sgld_samples: int = 2**20
    llc_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # training seeds whose LLC curve is estimated
    # Fig. B.1b: the llc_seeds after the first may be estimated at fewer checkpoints and with another
    # SGLD config, to fit a budget (None: the same as the first seed's).
    other_seeds_llc_checkpoints: int | None = None
    other_seeds_sgld: SGLDConfig | None = None
    # LLC fast path (part of each estimate's cache key): the loss through the predictions-only
    # forward (same function, ~0.8x the FLOPs) and the compute dtype: "auto" = bf16 where the
    # machine runs bf16 faster (stagewise.llc.fast_bf16_support), else fp32 (resolve_compute_dtype)
    sgld_loss: str = "predictions_only"
    sgld_dtype: str = "auto"
    # the training loss's forward (part of the run's cache key when not "full"): "full" (every output,
    # the papers' code) or "predictions_only" (the same loss and gradient up to float rounding, ≈ 0.8x
    # the FLOPs; stagewise.data.regression.regression_train_loss)
    train_loss: str = "full"
    # SGLD calibration (App. D.3.3; notebook 02's section, stagewise.llc.calibration): an ε × nβ grid
    # of short chains at 4 representative checkpoints and one chain 5x the profile's draws at its
    # setting. Default (paper, cpu, long): ε and nβ at 0.3x-10x and 0.3x-3x the profile's, one chain
    # of (profile burn-in + 100) steps per cell. Cost at `cpu` (17.5 ms per chain-step at m = 256):
    # 12 cells x 4 checkpoints x 200 steps ≈ 2.8 min, the long chains 4 x 1,100 steps ≈ 1.3 min.
    # Not part of any cache key (each chain is cached by its own SGLD config). Measured on the shipped
    # `long` run (benchmarks/results/sgld_calibration/regression_long.md): the profile's 2 x (100 + 200)
    # steps at m = 256 are 95.8-101.3% of a 1,000-draw chain's settled value at steps 5.5k, 20.8k
    # (peak, the worst), 298k and 500k: adequate at ±5%. Usable region: ε = 3e-4 at nβ = 66.7 good at
    # all four; 3x larger ε diverges at 5.5k (nβ ≥ 66.7), 10x at 5.5k and 20.8k; nβ = 200 diverges
    # from ε = 3e-4 at the peak; ε = 9e-5 stalls (still climbing after 100 draws) at nβ ≥ 66.7.
    sgld_calibration: CalibrationSettings = CalibrationSettings(epsilon_factors=(0.3, 1.0, 3.0, 10.0),
                                                                nbeta_factors=(0.3, 1.0, 3.0), num_draws=100,
                                                                long_factor=5, num_checkpoints=4)
    # a run shipped in data/runs/ for this profile's key (the `long` 500k steps) is loaded instead of
    # trained when the cache has none; False retrains and checks the result against the shipped one
    # (stagewise.runs.regression_run). Not part of any cache key.
    use_shipped_run: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.seeds:
            raise ValueError("seeds must name at least one training seed")
        if self.num_eval < 1:
            raise ValueError(f"num_eval must be >= 1, got {self.num_eval}")
        if self.num_analysis_checkpoints < 2:
            raise ValueError(f"num_analysis_checkpoints must be >= 2, got {self.num_analysis_checkpoints}")
        if self.other_seeds_llc_checkpoints is not None and self.other_seeds_llc_checkpoints < 2:
            raise ValueError(f"other_seeds_llc_checkpoints must be >= 2 or None, got {self.other_seeds_llc_checkpoints}")
        if not set(self.llc_seeds) <= set(self.seeds):
            raise ValueError(f"llc_seeds {self.llc_seeds} must be among the training seeds {self.seeds}")
        _check_sgld_path(self.sgld_loss, self.sgld_dtype)
        _check_train_loss(self.train_loss)
        if self.task.task_size != self.model.task_size or self.task.max_examples != self.model.max_examples:
            raise ValueError(
                f"task (D={self.task.task_size}, K={self.task.max_examples}) and model "
                f"(D={self.model.task_size}, K={self.model.max_examples}) must agree on D and K"
            )


    def llc_profile(self, seed: int) -> RegressionProfile:
        """The profile whose ``num_analysis_checkpoints`` and ``sgld`` give ``seed``'s LLC curve: this one
        for the first of ``llc_seeds``, with the ``other_seeds_*`` settings for the others. The training
        run (keyed by task, model, train, batch size and seed) is the same."""
        if seed not in self.llc_seeds:
            raise ValueError(f"seed {seed} is not among llc_seeds {self.llc_seeds}")
        if seed == self.llc_seeds[0]:
            return self
        return replace(self,
                       num_analysis_checkpoints=self.other_seeds_llc_checkpoints or self.num_analysis_checkpoints,
                       sgld=self.other_seeds_sgld or self.sgld)


def _check_train_loss(loss: str) -> None:
    from stagewise.data.regression import TRAIN_LOSS_PATHS

    if loss not in TRAIN_LOSS_PATHS:
        raise ValueError(f"train_loss must be one of {', '.join(TRAIN_LOSS_PATHS)}, got {loss!r}")


def _check_sgld_path(loss: str, dtype: str) -> None:
    from stagewise.data.regression import SGLD_LOSS_PATHS
    from stagewise.llc.sampler import COMPUTE_DTYPE_SETTINGS

    if loss not in SGLD_LOSS_PATHS:
        raise ValueError(f"sgld_loss must be one of {', '.join(SGLD_LOSS_PATHS)}, got {loss!r}")
    if dtype not in COMPUTE_DTYPE_SETTINGS:
        raise ValueError(f"sgld_dtype must be one of {', '.join(COMPUTE_DTYPE_SETTINGS)}, got {dtype!r}")


PROFILES = {
    # Paper: 500k steps of batch 256, Adam 3e-3 one-cycle, 190 checkpoints, seeds 0-4 (Table D.2).
    # LLC in fp32, the paper's numerics (sgld_dtype="auto" would take bf16 on a recent GPU).
    "paper": RegressionProfile(name="paper", sgld_dtype="float32"),
    # cpu: chosen by measurement (docs/results/pilots.md): the paper's model and batch at a shorter one-cycle
    # schedule, which compresses the stages in step count.
    "cpu": RegressionProfile(
        name="cpu",
        train=TrainConfig(num_steps=10_000, resume_every=1_000),
        seeds=(0, 1, 2, 3, 4),
        num_eval=1024,  # probes at 60 checkpoints x 5 seeds: ~0.45 s per checkpoint (2048: 0.9 s)
        num_analysis_checkpoints=60,
        # trained through the predictions-only forward: the papers' loss and gradient up to float
        # rounding, a step 1.27x faster on one Intel Xeon thread (benchmarks/results/training_loss_path.json)
        train_loss="predictions_only",
        # the paper's ε, β̃, γ̃ with fewer, shorter chains on smaller batches: 10.5 s per checkpoint.
        # Calibrated (benchmarks/results/sgld_calibration/regression_cpu.md): 95.1-99.8% of a 1,000-draw
        # chain's settled value at 4 checkpoints (early, peak, boundary, late), none unconverged.
        # Notebook 02's own calibration (fp32, Zen 3) picks step 124, beside LR1|LR2, as its boundary
        # checkpoint: 91.2% there (the long chain still climbing), 95.1-99.8% at the other three. Not raised yet.
        sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=2, num_draws=200, num_burnin=100, batch_size=256),
        num_sgld_samples=2**16,
        # Fig. B.1b: seeds 1-4 with the same chains' length but one chain at 24 checkpoints (6.7 s
        # each; seed 0's two chains differ by <= 5% of the LLC), to keep the notebook within 45 min
        llc_seeds=(0, 1, 2, 3, 4),
        other_seeds_llc_checkpoints=24,
        other_seeds_sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=1, num_draws=200, num_burnin=100,
                                               batch_size=256),
    ),
    # long: the late stages LR3-LR5 (pilots: docs/results/pilots.md): seed 0 at the paper's own
    # schedule (500k steps of its model, batch and optimiser; 100k and 200k did not separate LR3 from
    # LR4), the cpu profile's chains at all 190 checkpoints, as the paper (issue #31; notebook 02 also
    # reports the boundaries of the 60-checkpoint subset it used before); resume state every 5k steps.
    # Training takes ~5.6 min on one H200 with cuda_graph=True and ~4 h on one core of a 2-core CPU:
    # the run is shipped in data/runs/ and loaded instead (stagewise.shipped)
    "long": RegressionProfile(
        name="long",
        train=TrainConfig(num_steps=500_000, resume_every=5_000),
        seeds=(0,),
        num_eval=1024,
        num_analysis_checkpoints=190,
        # calibrated on the shipped run (benchmarks/results/sgld_calibration/regression_long.md): 95.8-101.3%
        # of a 1,000-draw chain at 5.5k, 21k, 298k and 500k; notebook 02's own calibration (fp32, Zen 3)
        # adds step 154 (beside LR1|LR2), where it reads 91.1% (the long chain needs ~530 draws to settle
        # there): short of ±5% early only, untouched so far (the late stages are what `long` is for;
        # 96.0% at the peak, 101.3% at 500k; with the doubled residual 92.1% at the peak). The authors' own sweep localized 10x less
        # (γ̃ = 0.001); that moves the fall later but splits nothing (benchmarks/pilots/regression_localization.py)
        sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=2, num_draws=200, num_burnin=100, batch_size=256),
        num_sgld_samples=2**16,
        llc_seeds=(0,),
    ),
    "smoke": RegressionProfile(
        name="smoke",
        model=RegressionTransformerConfig(),
        train=TrainConfig(num_steps=60, num_linear=10, num_log=10, resume_every=20),
        batch_size=32,
        seeds=(0, 1),  # two, so that every multi-seed cell (Fig. B.1b) runs
        num_eval=64,
        num_analysis_checkpoints=10,
        sgld=SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=1, num_draws=10, num_burnin=5, batch_size=32),
        num_sgld_samples=256,
        llc_seeds=(0, 1),
        other_seeds_llc_checkpoints=9,  # 8 positive steps, the least stage detection takes
        # the calibration's code path in seconds: 2 cells x 2 checkpoints, a 2x chain
        sgld_calibration=CalibrationSettings(epsilon_factors=(1.0, 10.0), nbeta_factors=(1.0,), num_draws=10,
                                             long_factor=2, num_checkpoints=2),
    ),
}
