"""One training loop for every model: checkpointed, atomic, resumable, cached by config.

Contract: the data is a callable ``batch_fn(step) -> batch`` that is a deterministic function of
the step, and the model is built by ``model_fn()`` after seeding torch with ``config.seed``. With
the optimizer and scheduler state saved beside the weights, a run killed at any point and
restarted ends bit-identical to an uninterrupted run on the same machine.

Files in a run directory::

    config.json                 the config that keys the cache entry
    checkpoints/step_XXXXXXXX.pt  model weights after that many optimizer updates (step 0 = init)
    resume.pt                   model + optimizer + scheduler + loss history at the last save
    history.pt, done.json       written when the run completes
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stagewise.cache import HASH_OMIT_DEFAULT, artifact_dir, atomic_save, atomic_write_text, load_artifact
from stagewise import cuda_graphs
from stagewise.cuda_graphs import copy_batch, map_batch
from stagewise.progress import tqdm

__all__ = ["COMPUTE_DTYPES", "TrainConfig", "TrainedRun", "analysis_steps", "checkpoint_schedule", "train", "train_cached"]

log = logging.getLogger(__name__)

# compute_dtype -> the autocast dtype of the forward pass (None: no autocast)
COMPUTE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and checkpointing. Defaults are the regression paper's (Table D.2)."""

    num_steps: int = 500_000
    lr: float = 3e-3  # maximum learning rate under OneCycle
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "onecycle"  # "onecycle" (linear anneal) | "constant"
    pct_start: float = 0.5
    # Checkpoints: ``checkpoint_every`` > 0 saves every that many steps (LM: 10); otherwise the
    # paper's regression schedule of ``num_linear`` linear + ``num_log`` log-spaced steps.
    num_linear: int = 100
    num_log: int = 90
    checkpoint_every: int = 0
    seed: int = 0  # model initialisation
    resume_every: int = 1000  # steps between resume-state saves (also saved at the end)
    grad_clip: float = 0.0  # 0 = no clipping (the papers do not clip)
    # Fields added after runs were cached: left out of the cache hash at their defaults
    # (stagewise.cache.HASH_OMIT_DEFAULT), so existing cache keys stay valid.
    # compute_dtype "bfloat16": forward pass and loss under torch.autocast (the backward follows its
    # dtypes); weights, gradients and optimizer state stay float32. The papers train in float32.
    compute_dtype: str = field(default="float32", metadata=HASH_OMIT_DEFAULT)
    # fused_optimizer: torch's fused CPU/GPU Adam(W) kernel instead of the foreach one: the same
    # update with other rounding (so hashed when on), 4x cheaper per step on the CPU (LM at 1 x 256:
    # 26 -> 6 ms of a ~100 ms step; benchmarks/results/lm_induction_pilots.md).
    fused_optimizer: bool = field(default=False, metadata=HASH_OMIT_DEFAULT)
    # the one-cycle schedule's start (max lr / div_factor) and end (start / final_div_factor): torch's
    # defaults, 25 and 1e4. The authors' regression code (timaeus-research/icl, icl/config.py) sets
    # both to num_steps / 2 - 1 (249,999 at 500k steps): the rate starts at ~1.2e-8, not 1.2e-4.
    div_factor: float = field(default=25.0, metadata=HASH_OMIT_DEFAULT)
    final_div_factor: float = field(default=1e4, metadata=HASH_OMIT_DEFAULT)

    def __post_init__(self):
        _positive("num_steps", self.num_steps)
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "constant"):
            raise ValueError(f"schedule must be 'onecycle' or 'constant', got {self.schedule!r}")
        if not (0 < self.pct_start < 1):
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas) or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.checkpoint_every < 0 or self.num_linear < 0 or self.num_log < 0:
            raise ValueError("checkpoint_every, num_linear and num_log must be >= 0")
        if self.checkpoint_every == 0 and self.num_linear + self.num_log < 2:
            raise ValueError("num_linear + num_log must be >= 2 when checkpoint_every is 0")
        _positive("resume_every", self.resume_every)
        for name in ("div_factor", "final_div_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
                raise ValueError(f"{name} must be a number >= 1 (the one-cycle schedule's start and end divisors), "
                                 f"got {value!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")

    def checkpoint_steps(self) -> np.ndarray:
        if self.checkpoint_every:
            return np.unique(np.append(np.arange(0, self.num_steps + 1, self.checkpoint_every), self.num_steps))
        return checkpoint_schedule(self.num_steps, self.num_linear, self.num_log)


def _positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def checkpoint_schedule(num_steps: int, num_linear: int = 100, num_log: int = 90) -> np.ndarray:
    """Union of ``num_linear`` linearly and ``num_log`` log-spaced steps in [0, num_steps].

    The paper's 190 checkpoints for 500k steps (App. D.2.3), generalised: the log-spaced part is
    densified until the union holds ``num_linear + num_log`` distinct steps (or every step, if
    the run is shorter than that), so early training is sampled as densely as the paper's.
    """
    _positive("num_steps", num_steps)
    target = min(num_linear + num_log, num_steps + 1)
    linear = np.unique(np.round(np.linspace(0, num_steps, num_linear)).astype(np.int64)) if num_linear else np.array([], np.int64)
    steps = linear
    k = num_log
    while True:
        log = np.unique(np.round(np.geomspace(1, num_steps, k)).astype(np.int64)) if k else np.array([], np.int64)
        steps = np.unique(np.concatenate([linear, log, [0, num_steps]]))
        if len(steps) >= target or k > 4 * (num_steps + 1):
            break
        k += max(1, (target - len(steps)) // 2)
    return steps


class TrainedRun:
    """A finished training run on disk: checkpoint steps, per-step loss, and loaders."""

    def __init__(self, directory: Path, model_fn: Callable[[], torch.nn.Module] | None = None):
        self.directory = Path(directory)
        self.model_fn = model_fn
        done = self.directory / "done.json"
        if not done.exists():
            raise FileNotFoundError(f"training run in {self.directory} has not completed (no done.json)")
        meta = json.loads(done.read_text())
        self.checkpoint_steps = np.asarray(meta["checkpoint_steps"], dtype=np.int64)
        history = load_artifact(self.directory / "history.pt")
        self.train_loss = history["loss"].numpy()
        seconds = meta.get("seconds")
        self.seconds = float("nan") if seconds is None else float(seconds)  # whole training; NaN if unknown

    def checkpoint_path(self, step: int) -> Path:
        return self.directory / "checkpoints" / f"step_{int(step):08d}.pt"

    def load_state(self, step: int) -> dict[str, torch.Tensor]:
        if int(step) not in set(self.checkpoint_steps.tolist()):
            raise ValueError(f"step {step} is not a checkpoint of this run; checkpoints: {self.checkpoint_steps[:5]}...")
        return load_artifact(self.checkpoint_path(step))

    def load_model(self, step: int) -> torch.nn.Module:
        if self.model_fn is None:
            raise ValueError("load_model needs the run's model_fn; construct TrainedRun with model_fn=...")
        model = self.model_fn()
        model.load_state_dict(self.load_state(step))
        return model.eval()

    def smoothed_loss(self, window: int = 0) -> np.ndarray:
        """Training loss smoothed by a centred moving average (default window: 1% of the run)."""
        window = window or max(1, len(self.train_loss) // 100)
        kernel = np.ones(window) / window
        padded = np.pad(self.train_loss, (window // 2, window - 1 - window // 2), mode="edge")
        return np.convolve(padded, kernel, mode="valid")


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig, capturable: bool = False):
    """Adam(W) and its schedule. ``capturable``: the optimizer state and the learning rate live on
    the model's device as tensors (the scheduler fills the lr in place), so one optimizer step can
    be captured in a CUDA graph and replayed with the schedule still moving."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kernel = {"fused": True} if cfg.fused_optimizer else {}
    lr: float | torch.Tensor = cfg.lr
    if capturable:
        kernel["capturable"] = True
        lr = torch.tensor(cfg.lr, device=next(model.parameters()).device)
    opt = cls(model.parameters(), lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kernel)
    if cfg.schedule == "onecycle":
        # cycle_momentum=False keeps Adam's β1 at the paper's 0.9 (torch would otherwise cycle it).
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.num_steps, pct_start=cfg.pct_start,
            anneal_strategy="linear", cycle_momentum=False, div_factor=float(cfg.div_factor),
            final_div_factor=float(cfg.final_div_factor),
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


def train(
    model_fn: Callable[[], torch.nn.Module],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batch_fn: Callable[[int], Any],
    config: TrainConfig,
    run_dir: Path,
    progress: bool = True,
    description: str = "train",
    tokens_per_batch: int = 0,
    device: str | torch.device | None = "cpu",
    cuda_graph: bool | None = False,
) -> TrainedRun:
    """Train (or resume, or just load) the run stored in ``run_dir``.

    ``loss_fn(model, batch)`` returns the scalar training loss. A non-finite loss stops training
    with an error naming the step (never silently continues). ``device``: where the model, the
    optimizer state and each batch live (None: a GPU if one is visible); checkpoints are always
    written from CPU copies, so a run trained on a GPU loads anywhere. Not part of the cache key:
    another device gives the same run up to float rounding (bit-identical resumption holds on the
    device the run was started on).

    ``cuda_graph`` (a CUDA device only): capture one whole step (forward, loss, backward, Adam) as a
    CUDA graph and replay it, with the batches built ahead on CPU threads and copied into the
    graph's static inputs: for small models, whose eager step is all kernel-launch overhead. The
    same run up to float rounding (the capturable Adam computes its bias corrections on the
    device); the finiteness of the loss is checked at every checkpoint instead of every step (no
    per-step host sync), and the error still names the first non-finite step. Not part of the key.
    ``cuda_graph=None``: graphed exactly when ``device`` is a CUDA device.
    """
    from stagewise.hardware import resolve_device

    device = resolve_device(device)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got device {str(device)!r}")
    run_dir = Path(run_dir)
    if (run_dir / "done.json").exists():
        return TrainedRun(run_dir, model_fn)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.checkpoint_steps()
    to_save = set(schedule.tolist())

    torch.manual_seed(config.seed)
    model = model_fn().to(device)  # initialised on the CPU from the seeded global RNG, then moved
    opt, sched = _make_optimizer(model, config, capturable=cuda_graph)
    losses = torch.full((config.num_steps,), float("nan"), device=device)  # on the device: no per-step sync
    start = 0
    earlier_seconds = 0.0  # training time of the pieces before this one (a resumed run)
    resume_file = run_dir / "resume.pt"
    if resume_file.exists():
        state = load_artifact(resume_file)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if cuda_graph:
            _make_capturable(opt)
        losses = state["loss"].to(device)
        start = int(state["step"])
        # a resume point written before the clock was kept across pieces has none: unknown, not 0
        earlier_seconds = float(state.get("seconds", float("nan")))
        log.info("resuming %s from step %d", run_dir, start)
    elif 0 in to_save:
        atomic_save(_cpu_state(model), ckpt_dir / f"step_{0:08d}.pt")

    def save_resume(step: int) -> None:
        atomic_save(
            {"model": _cpu_state(model), "optimizer": _portable_optimizer_state(opt.state_dict()),
             "scheduler": sched.state_dict(), "loss": losses.cpu(), "step": step,
             "seconds": earlier_seconds + time.perf_counter() - t0},
            resume_file,
        )

    t0 = time.perf_counter()
    bar = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps, desc=description,
               disable=not progress, mininterval=1.0, unit="step")
    model.train()
    last_resume = checked = start
    graphed = batches = None
    if cuda_graph and start < config.num_steps:
        batches = _Prefetcher(batch_fn, start, config.num_steps, pin=True)
        graphed = _GraphedStep(model, opt, loss_fn, _to_device(batch_fn(start), device), config)
    try:
        for step in bar:
            if graphed is not None:
                loss = graphed(next(batches))
            else:
                batch = _to_device(batch_fn(step), device)
                with _autocast(model, config.compute_dtype):
                    loss = loss_fn(model, batch).float()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} at step {step} of {run_dir}; lower lr or check data")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
            sched.step()
            losses[step] = loss.detach()
            done = step + 1
            if done in to_save:
                if graphed is not None:
                    _check_finite(losses, checked, done, run_dir)
                    checked = done
                atomic_save(_cpu_state(model), ckpt_dir / f"step_{done:08d}.pt")
                if done - last_resume >= config.resume_every or done == config.num_steps:
                    save_resume(done)
                    last_resume = done
            if progress and step % (2000 if graphed is not None else 50) == 0:
                rate = (step + 1 - start) / max(time.perf_counter() - t0, 1e-9)
                post = {"loss": f"{loss.item():.4f}"}
                if tokens_per_batch:
                    post["tok/s"] = f"{rate * tokens_per_batch:,.0f}"
                bar.set_postfix(post)
    finally:
        bar.close()
        if batches is not None:
            batches.close()
    _check_finite(losses, checked, config.num_steps, run_dir)
    if last_resume != config.num_steps:
        save_resume(config.num_steps)
    piece = time.perf_counter() - t0
    atomic_save({"loss": losses.cpu()}, run_dir / "history.pt")
    # seconds: the whole training, summed over the pieces of a resumed run up to each one's last
    # resume point (steps trained after it and redone are not counted twice); null where an earlier
    # piece's time is unknown. seconds_last_piece: this process's part alone.
    total = earlier_seconds + piece
    atomic_write_text(run_dir / "done.json", json.dumps(
        {"checkpoint_steps": schedule.tolist(), "seconds": total if total == total else None,
         "seconds_last_piece": piece, "resumed_from": start}))
    return TrainedRun(run_dir, model_fn)


def _check_finite(losses: torch.Tensor, lo: int, hi: int, run_dir: Path) -> None:
    """Raise naming the first step in [lo, hi) whose training loss is not finite."""
    bad = (~torch.isfinite(losses[lo:hi])).nonzero()
    if len(bad):
        step = lo + int(bad[0, 0])
        raise FloatingPointError(f"training loss is {float(losses[step])} at step {step} of {run_dir}; "
                                 "lower lr or check data")


def _portable_optimizer_state(state: dict) -> dict:
    """An optimizer state dict that loads into the eager optimizer on any device: a device-tensor
    learning rate (capturable mode) as a float, ``capturable`` off, and the step counts on the CPU."""
    groups = []
    for group in state["param_groups"]:
        group = dict(group)
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
        groups.append(group)
    per_param = {k: {n: (v.detach().cpu() if n == "step" and isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                 for k, s in state["state"].items()}
    return {"state": per_param, "param_groups": groups}


def _make_capturable(opt: torch.optim.Optimizer) -> None:
    """After loading a portable state: the lr back as a device tensor, capturable on, steps on the device."""
    for group in opt.param_groups:
        device = group["params"][0].device
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        group["capturable"] = True
        for p in group["params"]:
            st = opt.state.get(p, {})
            if isinstance(st.get("step"), torch.Tensor):
                st["step"] = st["step"].to(device=device, dtype=torch.float32)


class _Prefetcher:
    """``batch_fn(step)`` for steps start, start+1, … built ahead on CPU threads (``batch_fn`` is a
    deterministic function of the step, so the order of the work does not matter), in step order."""

    def __init__(self, batch_fn, start: int, stop: int, pin: bool, depth: int = 64, workers: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from stagewise.hardware import available_cores

        self._fn, self._next, self._stop, self._pin = batch_fn, start, stop, pin
        self._pool = ThreadPoolExecutor(max_workers=workers or max(1, min(8, available_cores() - 1)))
        self._queue: list = []
        for _ in range(depth):
            self._submit()

    def _make(self, step: int):
        batch = self._fn(step)
        return map_batch(torch.Tensor.pin_memory, batch) if self._pin else batch

    def _submit(self) -> None:
        if self._next < self._stop:
            self._queue.append(self._pool.submit(self._make, self._next))
            self._next += 1

    def __next__(self):
        if not self._queue:
            raise StopIteration
        batch = self._queue.pop(0).result()
        self._submit()
        return batch

    def close(self) -> None:
        for f in self._queue:
            f.cancel()
        self._pool.shutdown(wait=True)


class _GraphedStep:
    """One training step captured as a CUDA graph: ``step(batch)`` copies ``batch`` into the static
    inputs, replays forward, loss, backward (and clipping) and the optimizer's update, and returns
    the static loss tensor (valid until the next call).

    Capture follows torch's whole-network recipe: warm-up steps on a side stream, then the capture.
    The warm-up changes the weights and the optimizer state, so both are put back afterwards
    (capture itself records kernels without running them): the first replay is the run's next step.
    ``capture=False`` (CPU tests of this bookkeeping): the same warm-up and restore, then each call
    runs the step eagerly instead of replaying it.
    """

    def __init__(self, model, opt, loss_fn, example_batch, config: TrainConfig, warmup: int = 3, capture: bool = True):
        params = list(model.parameters())
        saved_params = [p.detach().clone() for p in params]
        saved_state = {p: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opt.state[p].items()}
                       for p in params if p in opt.state}
        self.static = map_batch(torch.Tensor.clone, example_batch)

        def step():
            with _autocast(model, config.compute_dtype):
                loss = loss_fn(model, self.static).float()
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
            opt.step()
            return loss

        self._step, self._opt, self.graph = step, opt, None
        if capture:
            self.graph, self.loss = cuda_graphs.capture(step, warmup, lambda: opt.zero_grad(set_to_none=True))
        else:
            for _ in range(warmup):
                opt.zero_grad(set_to_none=True)
                step()
        with torch.no_grad():
            for p, v in zip(params, saved_params):
                p.copy_(v)
            for p in params:
                for k, v in opt.state[p].items():
                    if isinstance(v, torch.Tensor):
                        v.copy_(saved_state[p][k]) if p in saved_state else v.zero_()
        if capture:
            torch.cuda.synchronize()

    def __call__(self, batch) -> torch.Tensor:
        copy_batch(self.static, batch)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._opt.zero_grad(set_to_none=True)
            self.loss = self._step()
        return self.loss


def _autocast(model: torch.nn.Module, compute_dtype: str):
    """The autocast context of ``compute_dtype`` on the model's device (a disabled one for float32)."""
    dtype = COMPUTE_DTYPES[compute_dtype]
    param = next(model.parameters(), None)
    device_type = param.device.type if param is not None else "cpu"
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _to_device(batch, device: torch.device):
    return map_batch(lambda t: t.to(device, non_blocking=True), batch)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_cached(kind: str, key: Any, model_fn, loss_fn, batch_fn, config: TrainConfig, **kwargs) -> TrainedRun:
    """:func:`train` in the artifact cache entry of ``kind`` keyed by ``key`` (which should
    include ``config`` and everything else that determines the run)."""
    return train(model_fn, loss_fn, batch_fn, config, artifact_dir(kind, key), **kwargs)


def analysis_steps(checkpoint_steps, num: int) -> np.ndarray:
    """A subset of ``num`` checkpoint steps spread evenly in log(step + 1), always keeping the first
    and last: the checkpoints at which expensive per-checkpoint analyses (LLC, Hessian) run."""
    steps = np.asarray(checkpoint_steps, dtype=np.int64)
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    if num >= len(steps):
        return steps
    targets = np.linspace(np.log1p(steps[0]), np.log1p(steps[-1]), num)
    chosen: list[int] = []
    available = list(range(len(steps)))
    for t in targets:
        i = min(available, key=lambda j: abs(np.log1p(steps[j]) - t))
        chosen.append(i)
        available.remove(i)
    return np.sort(steps[chosen])
