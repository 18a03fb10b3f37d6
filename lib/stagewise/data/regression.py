"""In-context linear regression data (main paper §6, App. D.2; Carroll et al. for finite task sets).

A sequence S_K = (x_1, y_1, ..., x_K, y_K) with task t ~ q(t), x_k ~ N(0, I_D) and
y_k = tᵀx_k + N(0, σ²). It is fed to the transformer as 2K tokens in R^{D+1} (eq. 20–22)::

    (0, x_1), (y_1, 0, ..., 0), ..., (0, x_K), (y_K, 0, ..., 0)

and the prediction ŷ_k is read from the first output component at the x_k token.

The task prior q is N(0, I_D) (``num_tasks=None``, the paper's infinite task diversity) or the
uniform distribution over a finite, *nested* task set T_M = {t_1, ..., t_M} drawn once from a
fixed task seed, so that T_M ⊂ T_M' for M < M' and the root task t_1 is shared (Carroll et al.).

Every batch is a deterministic function of ``(seed, step)``, so a resumed training run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = [
    "RegressionTask",
    "RegressionBatch",
    "RegressionBatches",
    "tokenize",
    "sample_batch",
    "task_set",
    "regression_loss",
    "regression_train_loss",
    "TRAIN_LOSS_PATHS",
    "per_token_loss",
    "regression_forward_loss",
    "regression_prediction_loss",
    "regression_sgld_loss",
    "sgld_dataset",
]


@dataclass(frozen=True)
class RegressionTask:
    """The data distribution. Defaults: the main paper's D = 4, K = 8, σ² = 0.125, M = ∞."""

    task_size: int = 4  # D
    max_examples: int = 8  # K
    noise_variance: float = 0.125  # σ²
    num_tasks: int | None = None  # M; None = infinite diversity, t ~ N(0, I_D)
    task_seed: int = 0  # seed of the nested task sequence t_1, t_2, ... (finite M only)

    def __post_init__(self):
        if not isinstance(self.task_size, int) or self.task_size < 1:
            raise ValueError(f"task_size (D) must be an integer >= 1, got {self.task_size!r}")
        if not isinstance(self.max_examples, int) or self.max_examples < 1:
            raise ValueError(f"max_examples (K) must be an integer >= 1, got {self.max_examples!r}")
        if not (self.noise_variance >= 0):
            raise ValueError(f"noise_variance (σ²) must be >= 0, got {self.noise_variance!r}")
        if self.num_tasks is not None and (not isinstance(self.num_tasks, int) or self.num_tasks < 1):
            raise ValueError(f"num_tasks (M) must be None (infinite) or an integer >= 1, got {self.num_tasks!r}")


class RegressionBatch(NamedTuple):
    tokens: torch.Tensor  # [B, 2K, D+1]
    ys: torch.Tensor  # [B, K]
    xs: torch.Tensor  # [B, K, D]
    tasks: torch.Tensor  # [B, D]


def task_set(task: RegressionTask) -> torch.Tensor:
    """The nested finite task set T_M as a [M, D] tensor (row 0 is the root task t_1)."""
    if task.num_tasks is None:
        raise ValueError("task_set needs a finite num_tasks (M); this task has infinite diversity")
    gen = torch.Generator().manual_seed(task.task_seed)
    # Draw the tasks one chunk at a time from the same stream so T_M is a prefix of T_M'.
    chunk = 1024
    n_chunks = -(-task.num_tasks // chunk)
    rows = [torch.randn(chunk, task.task_size, generator=gen) for _ in range(n_chunks)]
    return torch.cat(rows)[: task.num_tasks]


def tokenize(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave inputs [B, K, D] and targets [B, K] into tokens [B, 2K, D+1] (App. D.2.2)."""
    if xs.dim() != 3 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise ValueError(f"xs must be [B, K, D] and ys [B, K] with matching B, K; got {tuple(xs.shape)}, {tuple(ys.shape)}")
    B, K, D = xs.shape
    tokens = xs.new_zeros(B, 2 * K, D + 1)
    tokens[:, 0::2, 1:] = xs
    tokens[:, 1::2, 0] = ys
    return tokens


def sample_batch(
    task: RegressionTask,
    batch_size: int,
    generator: torch.Generator,
    tasks: torch.Tensor | None = None,
    input_gain: float = 1.0,
    task_gain: float = 1.0,
) -> RegressionBatch:
    """Sample ``batch_size`` sequences.

    ``tasks`` ([B, D] or [M, D] set to draw uniformly from) overrides the task prior; the gains
    scale the input / task distributions to N(0, g I) for the OOD probes of App. C.4.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    D, K = task.task_size, task.max_examples
    if tasks is None and task.num_tasks is not None:
        tasks = task_set(task)
    if tasks is None:
        t = torch.randn(batch_size, D, generator=generator)
    else:
        if tasks.dim() != 2 or tasks.shape[1] != D:
            raise ValueError(f"tasks must be [M, D] with D = {D}, got {tuple(tasks.shape)}")
        idx = torch.randint(len(tasks), (batch_size,), generator=generator)
        t = tasks[idx]
    t = t * task_gain**0.5
    xs = torch.randn(batch_size, K, D, generator=generator) * input_gain**0.5
    noise = torch.randn(batch_size, K, generator=generator) * task.noise_variance**0.5
    ys = torch.einsum("bkd,bd->bk", xs, t) + noise
    return RegressionBatch(tokenize(xs, ys), ys, xs, t)


class RegressionBatches:
    """Training data as a deterministic function of the step: ``batches(step) -> (tokens, ys)``."""

    def __init__(self, task: RegressionTask, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self._tasks = task_set(task) if task.num_tasks is not None else None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(_mix(self.seed, step))
        batch = sample_batch(self.task, self.batch_size, gen, tasks=self._tasks)
        return batch.tokens, batch.ys


def _mix(seed: int, step: int) -> int:
    # A fixed odd multiplier keeps (seed, step) pairs distinct for any realistic run length.
    return (seed * 0x9E3779B1 + step) % (2**63 - 1)


def per_token_loss(predictions: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """ℓ_k = mean over the batch of (ŷ_k − y_k)², shape [K]."""
    return ((predictions - ys) ** 2).mean(dim=0)


def regression_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean over sequences and over k of (ŷ_k − y_k)² (main paper §6)."""
    tokens, ys = batch[0], batch[1]
    if tokens.shape[1] != 2 * ys.shape[1]:
        raise ValueError(f"tokens hold {tokens.shape[1] // 2} examples but ys has K = {ys.shape[1]}")
    return ((model(tokens)[:, ::2, 0] - ys) ** 2).mean()


def regression_forward_loss(forward, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:func:`regression_loss` for the LLC engine's ``loss(forward, batch)`` convention, where
    ``forward`` is the model's forward pass at the sampled weights."""
    tokens, ys = batch[0], batch[1]
    return ((forward(tokens)[:, ::2, 0] - ys) ** 2).mean()


def regression_prediction_loss(forward, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:func:`regression_forward_loss` through the model's predictions-only forward
    (``forward(tokens, predictions_only=True)``: the last block at the x positions only, output
    component 0 only; same function up to float rounding, ≈ 0.8x the matmul FLOPs). The loss path
    of the regression LLC sweeps (profile field ``sgld_loss = "predictions_only"``)."""
    tokens, ys = batch[0], batch[1]
    return ((forward(tokens, predictions_only=True) - ys) ** 2).mean()


SGLD_LOSS_PATHS = ("full", "predictions_only")
TRAIN_LOSS_PATHS = SGLD_LOSS_PATHS


def regression_train_loss(path: str):
    """The training loss ``loss(model, batch)`` of a regression profile's ``train_loss`` setting:
    ``"full"`` (every output, then the x positions' first component: :func:`regression_loss`, the
    papers') or ``"predictions_only"`` (:func:`regression_prediction_loss`, the model being its own
    forward: the same function of the weights and gradient up to float rounding, ≈ 0.8x the matmul
    FLOPs; a `cpu` regression training step 1.27x faster on one Intel Xeon thread,
    benchmarks/results/training_loss_path.json)."""
    if path not in TRAIN_LOSS_PATHS:
        raise ValueError(f"train_loss must be one of {', '.join(TRAIN_LOSS_PATHS)}, got {path!r}")
    return regression_loss if path == "full" else regression_prediction_loss


def regression_sgld_loss(path: str):
    """The LLC loss of a regression profile's ``sgld_loss`` setting: ``"full"`` (every output, then
    the x positions' first component) or ``"predictions_only"``."""
    if path not in SGLD_LOSS_PATHS:
        raise ValueError(f"sgld_loss must be one of {', '.join(SGLD_LOSS_PATHS)}, got {path!r}")
    return regression_forward_loss if path == "full" else regression_prediction_loss


def sgld_dataset(task: RegressionTask, num_samples: int, seed: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed data set SGLD draws its minibatches from (App. D.2.4: 2^20 samples), as (tokens, ys).

    Its seed is separate from every training seed, so it is fresh data for all runs.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    b = sample_batch(task, num_samples, torch.Generator().manual_seed(seed))
    return b.tokens, b.ys
