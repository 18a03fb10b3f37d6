"""Where a notebook's LLC sweeps run: in the notebook's process, or on an existing Dask cluster.

    from stagewise.cluster import sweep_executor
    sweep = regression_llc(profile, seed, executor=sweep_executor())

:func:`sweep_executor` returns ``"serial"`` unless a scheduler address is given — as its
``address`` argument or in ``$STAGEWISE_DASK_SCHEDULER`` (e.g. ``tcp://10.0.0.5:8786``) — and
then a ``dask.distributed.Client`` connected to it, which every sweep (``estimate_llc_sweep``,
``head_llc_sweep``, ``data_llc_sweep``, ``train_runs``) accepts as its ``executor``: one checkpoint
per task, results written to the cache by the notebook's process as they arrive.

The workers must import ``stagewise`` (the same checkout or wheel, same torch) and read the
checkpoint files at the paths the notebook passes (one machine, or a file system shared at the same
path); they need no access to the cache directory. Unreachable schedulers are an error, never a
silent fallback to serial.
"""

from __future__ import annotations

import logging
import os

__all__ = ["SCHEDULER_ENV", "sweep_executor", "scheduler_address"]

log = logging.getLogger(__name__)

SCHEDULER_ENV = "STAGEWISE_DASK_SCHEDULER"


def scheduler_address(address: str | None = None) -> str | None:
    """``address`` if given, else ``$STAGEWISE_DASK_SCHEDULER``, else None (blank counts as unset)."""
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a string such as 'tcp://host:8786' or None, got {type(address).__name__}")
    chosen = address if address is not None else os.environ.get(SCHEDULER_ENV, "")
    chosen = chosen.strip()
    return chosen or None


def sweep_executor(address: str | None = None, timeout: float = 30.0):
    """``"serial"``, or a ``dask.distributed.Client`` connected to the scheduler at ``address`` /
    ``$STAGEWISE_DASK_SCHEDULER``.

    Raises ImportError (saying which package) when ``distributed`` is missing, and OSError naming the
    address when no scheduler answers within ``timeout`` seconds. The client is logged with its
    worker and thread counts; close it (``client.close()``) when the notebook is done, or let the
    process end.
    """
    chosen = scheduler_address(address)
    if chosen is None:
        return "serial"
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise ImportError(f"{SCHEDULER_ENV} / address {chosen!r} asks for a Dask cluster, but the 'distributed' "
                          "package is not installed (pip install distributed)") from exc
    try:
        client = Client(chosen, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise OSError(f"no Dask scheduler answered at {chosen!r} within {timeout:g} s (from "
                      f"{'the address argument' if address is not None else '$' + SCHEDULER_ENV}): {exc}") from exc
    info = client.scheduler_info()
    workers = info.get("workers", {})
    log.info("LLC sweeps on the Dask cluster at %s: %d workers, %d threads", chosen, len(workers),
             sum(w.get("nthreads", 0) for w in workers.values()))
    if not workers:
        log.warning("the Dask scheduler at %s has no workers yet: tasks wait until one joins", chosen)
    return client
