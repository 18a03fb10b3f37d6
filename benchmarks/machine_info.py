"""Machine readings shared by the benchmark scripts, with no imports beyond the standard library
(``bench_llc_devinterp2.py`` runs in the devinterp 2.0.1 environment, which has stagewise's models
but not everything ``bench_llc.py`` imports)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def busy_cpu_seconds() -> float:
    """Seconds of CPU time all processes on the machine have used (Linux /proc/stat), NaN elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_name() -> str:
    """A standard-library copy of :func:`stagewise.hardware.cpu_name`, for the devinterp environment."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
