"""One figure style for every notebook, and the one way figures are written to ``figures/``.

Colour conventions follow the main paper's Fig. 1: stages with increasing LLC in orange hues,
decreasing LLC in blue hues.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

__all__ = [
    "INCREASE_COLORS",
    "DECREASE_COLORS",
    "apply_style",
    "figures_dir",
    "save_figure",
    "stage_color",
]

INCREASE_COLORS = ("#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801")
DECREASE_COLORS = ("#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5")

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def apply_style() -> None:
    """Apply the shared matplotlib style (idempotent)."""
    plt.rcParams.update(STYLE)


def stage_color(index: int, direction: str) -> str:
    """Colour of the ``index``-th stage with LLC ``direction`` ('increase' or 'decrease')."""
    if direction not in ("increase", "decrease"):
        raise ValueError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    palette = INCREASE_COLORS if direction == "increase" else DECREASE_COLORS
    return palette[index % len(palette)]


def figures_dir(profile: str | None = None) -> Path:
    """Where figures go: ``$STAGEWISE_FIGURES`` if set, else ``<repo>/figures``.

    The default ``cpu`` profile writes to the top level (those figures are committed); the other
    profiles write to a subfolder named after the profile, so a smoke run never overwrites them.
    """
    env = os.environ.get("STAGEWISE_FIGURES")
    if env:
        path = Path(env)
    else:
        from stagewise.cache import _repo_root

        repo = _repo_root()
        path = (repo / "figures") if repo else Path("figures")
    if profile is not None and profile != "cpu":
        path = path / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str, profile: str | None = None, directory: Path | None = None,
                formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<figures_dir(profile)>/<name>.<fmt>`` for each format (PNG + a vector format).

    ``name`` is the paper's figure label, e.g. ``"fig1b_regression_llc"``.
    """
    if not name or any(c in name for c in "/\\ ."):
        raise ValueError(f"figure name must be a plain file stem like 'fig1b_regression_llc', got {name!r}")
    directory = Path(directory) if directory is not None else figures_dir(profile)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = directory / f"{name}.{fmt}"
        # metadata without dates keeps vector files byte-stable across reruns
        metadata = {"CreationDate": None} if fmt == "pdf" else ({"Date": None} if fmt == "svg" else None)
        fig.savefig(path, format=fmt, metadata=metadata)
        paths.append(path)
    return paths
