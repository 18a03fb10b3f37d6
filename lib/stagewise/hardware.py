"""Where computations run: the cores this process may use and the default device.

* :func:`available_cores` — the cores of this process's CPU affinity (a ``stagewise-figures --jobs``
  child is pinned to its share), not the machine's count: worker pools and thread counts sized from
  it never oversubscribe a pinned job.
* :func:`default_device` — ``"cuda"`` when a GPU is visible, else ``"cpu"``: training and the LLC
  sweeps run there unless told otherwise.
* :func:`machine_description` — the machine in a few words (cores, CPU or GPU, SGLD's dtype there),
  which each headline JSON records beside the seconds it measured.
* :func:`malloc_environment` — the environment with glibc's allocator told to keep freed memory
  (:data:`MALLOC_SETTINGS`), which ``stagewise-figures``, ``make lab`` and ``make test`` give every
  process they start.

Why the allocator: glibc serves each allocation above its mmap threshold (which adapts up to 32 MiB
and no further) with a fresh ``mmap`` and unmaps it on ``free``, so a tensor of a few tens of MiB —
the language model's logits over its 5,000-token vocabulary, a batch of Hessian-vector products —
is page-faulted in, zeroed by the kernel and unmapped again at every step. With mmap off and the
heap never trimmed, freed blocks are reused instead. Measured on one thread of a 2-core AMD EPYC
(Zen 3), the same computation either way (``benchmarks/bench_malloc.py``,
``benchmarks/results/malloc.md``): the Hessian statistics of notebook 05 1.6x faster, a probe row
of the language model 1.3x, its training step 1.26x, an SGLD gradient of it 1.07x (smaller
tensors, which the adaptive threshold already keeps). The cost: a process keeps its peak heap until
it exits, and its peak grows (the Hessian statistics' from 3.5 to 5.3 GB). ``STAGEWISE_MALLOC=system``
(or a ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` of your own) leaves the allocator alone.
Other C libraries ignore these variables.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["available_cores", "default_device", "resolve_device", "cpu_name", "machine_description",
           "MALLOC_SETTINGS", "malloc_environment"]

# glibc's allocator: no mmap-served blocks, no trimming of the heap below 4 GiB free (read once,
# when a process starts, so they must be in the environment of the process to be tuned)
MALLOC_SETTINGS = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → :func:`default_device`; otherwise the named device, checked to exist."""
    device = torch.device(default_device() if device is None else device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but no CUDA device is available; use 'cpu' or None")
    return device


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(device: str | torch.device | None = None) -> str:
    """Where a measured time was measured, e.g. ``"2-core Intel(R) Xeon(R) Processor (amx_bf16),
    SGLD in bf16"``: the machine's cores, the CPU (with the flag that decides SGLD's dtype,
    :func:`stagewise.llc.sampler.fast_bf16_support`) or the GPU, and that dtype; ``", 1 core used"``
    added when this process may use fewer cores than the machine has (a notebook pinned to one core
    of two by ``make figures``)."""
    from stagewise.llc.sampler import fast_bf16_support

    device = resolve_device(device)
    bf16, _ = fast_bf16_support(device)
    dtype = "bf16" if bf16 else "fp32"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, SGLD in {dtype}"
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    flag = next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "AVX2" if "avx2" in flags else None)
    total, used = os.cpu_count() or available_cores(), available_cores()
    pinned = f", {used} core{'s' if used > 1 else ''} used" if used < total else ""
    return f"{total}-core {cpu_name()}{f' ({flag})' if flag else ''}, SGLD in {dtype}{pinned}"


def malloc_environment(base: dict | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with :data:`MALLOC_SETTINGS` added where not set already,
    unless ``STAGEWISE_MALLOC=system`` (then unchanged). A copy; give it to a process when starting it."""
    env = dict(os.environ if base is None else base)
    mode = env.get("STAGEWISE_MALLOC", "tuned")
    if mode not in ("tuned", "system"):
        raise ValueError(f"STAGEWISE_MALLOC must be 'tuned' or 'system', got {mode!r}")
    if mode == "tuned":
        for name, value in MALLOC_SETTINGS.items():
            env.setdefault(name, value)
    return env
