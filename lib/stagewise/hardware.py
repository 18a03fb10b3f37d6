"""Where computations run: the cores this process may use and the default device.

* :func:`available_cores` — the cores of this process's CPU affinity (a ``stagewise-figures --jobs``
  child is pinned to its share), not the machine's count: worker pools and thread counts sized from
  it never oversubscribe a pinned job.
* :func:`default_device` — ``"cuda"`` when a GPU is visible, else ``"cpu"``: training and the LLC
  sweeps run there unless told otherwise.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "default_device", "resolve_device"]


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
