"""Where computations run: the cores this process may use and the default device.

* :func:`available_cores` — the cores of this process's CPU affinity (a ``stagewise-figures --jobs``
  child is pinned to its share), not the machine's count: worker pools and thread counts sized from
  it never oversubscribe a pinned job.
* :func:`default_device` — ``"cuda"`` when a GPU is visible, else ``"cpu"``: training and the LLC
  sweeps run there unless told otherwise.
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

import torch

__all__ = ["available_cores", "default_device", "resolve_device", "MALLOC_SETTINGS", "malloc_environment"]

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
