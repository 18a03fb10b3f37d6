"""One figure style for every notebook, and the one way figures are written to ``figures/``.

Colour conventions follow the main paper's Fig. 1: stages with increasing LLC in orange hues,
decreasing LLC in blue hues.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "INCREASE_COLORS",
    "DECREASE_COLORS",
    "add_stage_legend",
    "apply_style",
    "figures_dir",
    "pilot_dir",
    "stamp_setting",
    "plot_essential_dynamics",
    "plot_ed_over_training",
    "plot_over_training",
    "plot_stages",
    "save_figure",
    "shade_stages",
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
    # log axes label 0.03 and 2.4 as plain numbers (not 3×10⁻², 2.4×10⁰); 10³ and beyond as powers
    "axes.formatter.min_exponent": 3,
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


def pilot_dir(name: str) -> Path:
    """Where a pilot's figures and headline JSON go (a run at non-profile settings, e.g. notebook 02
    with ``num_steps``): ``<repo>/benchmarks/results/pilots/<name>``, beside the other pilot records,
    so a profile's figures folder only ever holds that profile's notebooks."""
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"pilot name must be a plain folder name like 'long-200000', got {name!r}")
    from stagewise.cache import _repo_root

    repo = _repo_root()
    return (repo / "benchmarks" / "results" if repo else Path.cwd()) / "pilots" / name


def save_figure(fig, name: str, profile: str | None = None, directory: Path | None = None,
                formats=("png", "pdf"), setting: str | None = None) -> list[Path]:
    """Save ``fig`` as ``<figures_dir(profile)>/<name>.<fmt>`` for each format (PNG + a vector format).

    ``name`` is the paper's figure label, e.g. ``"fig1b_regression_llc"``. ``setting`` names a
    non-paper ingredient (e.g. ``"residual=paper_code"``): stamped under the figure's title
    (:func:`stamp_setting`) unless a title of the figure already says it, so that no figure of a
    variant run can be mistaken for the paper's setting.
    """
    if not name or any(c in name for c in "/\\ ."):
        raise ValueError(f"figure name must be a plain file stem like 'fig1b_regression_llc', got {name!r}")
    if setting is not None:
        titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
        if not any(setting in t for t in titles):
            stamp_setting(fig, setting)
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


def stamp_setting(fig, setting: str) -> None:
    """Name ``setting`` (the profile, and any non-paper ingredient) under the figure's title, or as its
    title: above the figure's top edge (saved with a tight bounding box), never over the panels' titles."""
    if not setting:
        raise ValueError("setting must name the profile (and any non-paper ingredient), got an empty string")
    old = fig.get_suptitle()
    fig.suptitle(f"{old}\n{setting}" if old else setting, fontsize=8, y=1.0, va="bottom")


# ------------------------------------------------------------------------------------------------
# The standard stage figure (Fig. 1, B.2, C.1) and the essential-dynamics figure ([DL] Fig. 2)


def _stage_colors(stages) -> list[str]:
    """Successive hues within each direction, as in Fig. 1 (orange: LLC increases, blue: decreases)."""
    counts = {"increase": 0, "decrease": 0}
    colors = []
    for st in stages:
        colors.append(stage_color(counts[st.direction], st.direction))
        counts[st.direction] += 1
    return colors


def _log_step_axis(ax, steps) -> None:
    steps = np.asarray(steps, dtype=float)
    if np.any(steps <= 0):  # step 0 is a checkpoint: linear below the first positive step
        ax.set_xscale("symlog", linthresh=float(steps[steps > 0].min()), linscale=0.3)
    else:
        ax.set_xscale("log")


def _shade_stages(ax, result, colors, label: bool = False, quantity: str = "LLC") -> None:
    for i, (st, color) in enumerate(zip(result.stages, colors)):
        ax.axvspan(st.start, st.end, color=color, alpha=SHADE_ALPHA, lw=0, zorder=0)
        if label:
            mid = np.sqrt(max(st.start, 1.0) * st.end)
            ax.text(mid, 1.0, str(i + 1), transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    for b in result.boundaries:
        ax.axvline(b, color="0.3", lw=0.8, ls="--", zorder=1)
    add_stage_legend(ax.figure, result, numbered=label, quantity=quantity)


SHADE_ALPHA = 0.35
_STAGE_LEGEND = "_stagewise_stage_legend"  # Figure attribute: (directions, numbered, has_boundaries, legend)


def add_stage_legend(fig, result, numbered: bool = False, quantity: str = "LLC"):
    """Explain the stage shading of ``fig`` in a legend below it (every stage-shading helper calls it).

    One entry per direction present among ``result``'s stages (orange hues: ``quantity``, the curve
    the stages were detected from, increases; blue hues: it decreases; successive stages darker),
    one for the dashed boundary lines, and, if ``numbered``, a note that the numbers on top count
    the stages. Called again for the same figure (several shaded panels), it redraws one legend
    covering every call. Returns the Legend.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    directions, was_numbered, had_boundaries, old = getattr(fig, _STAGE_LEGEND, (set(), False, False, None))
    directions = directions | {st.direction for st in result.stages}
    numbered = numbered or was_numbered
    has_boundaries = had_boundaries or len(result.boundaries) > 0
    if old is not None:
        old.remove()
    handles = []
    for direction, palette, verb in (("increase", INCREASE_COLORS, "rises"), ("decrease", DECREASE_COLORS, "falls")):
        if direction in directions:
            handles.append(Patch(facecolor=palette[2], alpha=SHADE_ALPHA + 0.15, lw=0,
                                 label=f"stage where the {quantity} {verb}"))
    if has_boundaries:
        handles.append(Line2D([], [], color="0.3", lw=0.8, ls="--", label="stage boundary"))
    title = f"shading: developmental stages detected from the {quantity}"
    title += " (numbered on top; later stages darker)" if numbered else " (later stages darker)"
    legend = fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                        title=title, title_fontsize=8, fontsize=8, frameon=False)
    setattr(fig, _STAGE_LEGEND, (directions, numbered, has_boundaries, legend))
    return legend


def plot_stages(result, steps, values, stds=None, loss=None, extra=None, axes=None, title=None,
                value_label: str = "LLC $\\hat\\lambda(w_t)$", loss_label: str = "test loss",
                panel_titles=None):
    """The one stage figure: [loss], LLC with error band and GP fit, [extra curves], slope.

    ``result`` is a :class:`stagewise.stages.StageResult` for (``steps``, ``values``); ``stds`` draws
    the error band; ``extra`` is a dict {label: values over ``steps``} (e.g. weight norm), one panel
    each. Stages are shaded (orange hues: LLC increasing, blue: decreasing, Fig. 1), boundaries
    dashed, their intervals drawn as bars on the slope panel, whose grey band is ± the tolerance; a
    legend below the figure explains the shading (:func:`add_stage_legend`).
    ``axes``: a sequence of as many Axes as panels (else a new figure). ``title``: the figure's title.
    ``panel_titles``: one title per panel, saying what it shows (default: a description of each
    panel; an ``extra`` panel is titled by its label). Put units in ``loss_label`` and the ``extra``
    labels, e.g. ``"validation loss (nats/token)"``. Returns the Figure.
    """
    apply_style()
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    extra = dict(extra or {})
    n_panels = 2 + (loss is not None) + len(extra)
    if axes is None:
        fig, axes = plt.subplots(n_panels, 1, figsize=(6.5, 1.6 * n_panels + 0.6), sharex=True)
    else:
        if len(axes) != n_panels:
            raise ValueError(f"axes: need {n_panels} axes (loss, LLC, extra, slope), got {len(axes)}")
        fig = axes[0].figure
    axes = list(np.atleast_1d(axes))
    is_llc = value_label.startswith("LLC")
    if panel_titles is None:
        panel_titles = ((["Loss during training"] if loss is not None else [])
                        + ["LLC estimate over training, with the GP fit that stages are read from" if is_llc
                           else f"{value_label} over training, with the GP fit that stages are read from"]
                        + [re.sub(r"\s*\([^()]*\)$", "", label.replace("\n", " ")) for label in extra]
                        + [("Slope of the GP fit: boundaries sit on plateaus (|slope| < tolerance) "
                            "between changes")])
    panel_titles = list(panel_titles)
    if len(panel_titles) != n_panels:
        raise ValueError(f"panel_titles: need {n_panels} titles (loss, LLC, extra, slope), got {len(panel_titles)}")
    colors = _stage_colors(result.stages)
    panel = iter(axes)

    if loss is not None:
        ax = next(panel)
        ax.plot(steps, loss, color="k", lw=1)
        ax.set_ylabel(loss_label)
        ax.set_yscale("log" if np.all(np.asarray(loss) > 0) else "linear")
    ax = next(panel)
    if stds is not None:
        stds = np.asarray(stds, dtype=float)
        ax.fill_between(steps, values - stds, values + stds, color="0.5", alpha=0.25, lw=0, label="± std")
    ax.plot(steps, values, ".", color="k", ms=2.5, label="estimate")
    ax.plot(steps, result.smoothed, color="tab:red", ls=":", lw=1.5, label="GP fit")
    ax.set_ylabel(value_label)
    ax.legend(loc="best")
    for label, curve in extra.items():
        ax = next(panel)
        ax.plot(steps, curve, color="k", lw=1)
        ax.set_ylabel(label)
    ax = next(panel)
    ax.axhspan(-result.tolerance, result.tolerance, color="0.6", alpha=0.3, lw=0, label="tolerance")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.fill_between(steps, result.slope - 2 * result.slope_std, result.slope + 2 * result.slope_std,
                    color="tab:red", alpha=0.15, lw=0)
    ax.plot(steps, result.slope, color="tab:red", lw=1.2, label="GP slope (± 2 std)")
    for b, (lo, hi) in zip(result.boundaries, result.intervals):
        if np.isfinite(lo):
            ax.errorbar([b], [0], xerr=[[b - lo], [hi - b]], fmt="o", color="k", ms=3, capsize=2, lw=1)
    if is_llc:
        ax.set_ylabel(r"$d\hat\lambda / d\log t$" if result.log_time else r"$d\hat\lambda / dt$")
    else:
        ax.set_ylabel("slope per unit log step" if result.log_time else "slope per step")
    ax.set_xlabel("training step $t$")
    ax.legend(loc="best")
    for i, ax in enumerate(axes):
        _shade_stages(ax, result, colors, label=(i == 0), quantity="LLC" if is_llc else value_label)
        _log_step_axis(ax, steps)
        ax.set_title(panel_titles[i], pad=12 if i == 0 else 4, fontsize=9)
    if title:
        fig.suptitle(title)
    if axes[0].figure is fig and len(fig.axes) == n_panels:
        fig.tight_layout()
    return fig


def plot_essential_dynamics(ed, stages=None, pairs=None, extra_points=None, circles: bool = True,
                            max_radius: float | None = None, axes=None, title=None):
    """Plane projections γ_ij of an :class:`stagewise.essential_dynamics.EssentialDynamics` ([DL] Fig. 2).

    Raw PC scores (faint dots), the smoothed trajectory coloured by stage (``stages``: a StageResult,
    Fig. 1 colours) or by log-step, osculating circles (grey; radius clipped at ``max_radius``,
    default the trajectory's extent), the evolute (black dots), each plane's own turning vertices
    (red × at their centres of curvature) and the forms (stars on the trajectory, labelled by step).
    ``extra_points``: {label: PC scores [n, k]} (e.g. ideal predictors via ``pca.project``).
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle

    from stagewise.essential_dynamics import osculating_circles

    apply_style()
    pairs = [p for p in ed.cusps] if pairs is None else [tuple(p) for p in pairs]
    if axes is None:
        fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.4), squeeze=False)
        fig.subplots_adjust(wspace=0.4)  # room for each panel's y label beside the previous one's plot
        axes = axes[0]
    fig = axes[0].figure
    steps = ed.trajectory_steps
    if stages is not None:
        stage_index = np.searchsorted(stages.boundaries, steps, side="right")
        seg_colors = [_stage_colors(stages.stages)[i] for i in stage_index[:-1]]
    else:
        t = np.log1p(steps)
        seg_colors = plt.get_cmap("viridis")((t[:-1] - t.min()) / max(np.ptp(t), 1e-12))
    for ax, (i, j) in zip(axes, pairs):
        curve = ed.smoothed[:, [i, j]]
        extent = np.ptp(curve, axis=0).max()
        rmax = max_radius if max_radius is not None else extent
        ax.plot(ed.scores[:, i], ed.scores[:, j], ".", color="0.6", ms=2, zorder=1)
        if circles:
            centres, radii, _ = osculating_circles(curve)
            for c, r in zip(centres, radii):
                if np.isfinite(r) and r < rmax:
                    ax.add_patch(Circle(c, r, fill=False, color="0.5", lw=0.3, alpha=0.25, zorder=0))
            ok = np.isfinite(radii) & (radii < rmax)
            ax.plot(centres[ok, 0], centres[ok, 1], ".", color="k", ms=1.5, zorder=2)
        segments = np.stack([curve[:-1], curve[1:]], axis=1)
        ax.add_collection(LineCollection(segments, colors=seg_colors, lw=2.5, zorder=3))
        for c in ed.cusps.get((i, j), ()):
            ax.plot(*c.centre, "x", color="tab:red", ms=6, mew=1.5, zorder=4)
        for f in ed.forms:
            at = ed.smoothed[f.index, [i, j]]  # the form's point on the trajectory
            ax.plot(*at, "*", color="gold", mec="k", ms=12, zorder=5)
            ax.annotate(f"{f.step:,.0f}", at, fontsize=7, xytext=(4, 4), textcoords="offset points")
        for label, pts in (extra_points or {}).items():
            pts = np.atleast_2d(pts)
            ax.plot(pts[:, i], pts[:, j], "D", ms=5, label=label, zorder=5)
        pad = 0.15 * extent
        ax.set_xlim(curve[:, 0].min() - pad, curve[:, 0].max() + pad)
        ax.set_ylim(curve[:, 1].min() - pad, curve[:, 1].max() + pad)
        ax.set_aspect("equal", adjustable="datalim")
        evr = ed.pca.explained_variance_ratio
        ax.set_xlabel(f"PC{i + 1} ({evr[i]:.0%})")
        ax.set_ylabel(f"PC{j + 1} ({evr[j]:.0%})")
        if extra_points:
            ax.legend(loc="best")
    if title:
        fig.suptitle(title, y=1.0 + 0.05 * title.count("\n"))
    return fig


def plot_ed_over_training(ed, stages=None, axes=None, title=None, label: str = "", compact: bool = False):
    """Essential dynamics against training step: the top PCs' raw scores (dots) and smoothed
    trajectory (lines), then the trajectory's turn (the angle between its chords into and out of
    each point, :func:`stagewise.essential_dynamics.turning_profile`) with the threshold, the forms
    (stars) and, shaded, the LLC's stages (``stages``: a StageResult) with their boundaries dashed.
    ``label`` prefixes the panel titles (e.g. a seed). ``compact``: short panel titles and small
    legends, for a grid of narrow panels (one column per seed)."""
    from stagewise.essential_dynamics import turning_profile

    apply_style()
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True)
    fig = axes[0].figure
    t = ed.trajectory_steps
    k = ed.scores.shape[1]
    evr = ed.pca.explained_variance_ratio
    for c in range(k):
        color = f"C{c}"
        axes[0].plot(np.maximum(ed.steps, 1), ed.scores[:, c], ".", ms=2, color=color, alpha=0.5)
        axes[0].plot(np.maximum(t, 1), ed.smoothed[:, c], color=color, lw=1.4, label=f"PC{c + 1} ({evr[c]:.0%})")
    axes[0].set_ylabel("PC score")
    legend_kw = {"fontsize": 6, "handlelength": 1.2} if compact else {}
    axes[0].legend(ncol=1 if compact else k, loc="best", **legend_kw)
    axes[0].set_title(f"{label}top {k} PCs ({evr.sum():.0%})" if compact else
                      f"{label}top {k} PCs of the outputs ({evr.sum():.0%} of the variance): raw and smoothed")
    steps, turn, snr = turning_profile(ed)
    axes[1].plot(steps, turn, color="k", lw=1.2, label="turn over ±0.3 decade")
    weak = snr < ed.settings["min_snr"]
    axes[1].plot(steps[weak], turn[weak], ".", color="0.6", ms=3, label=f"chords < {ed.settings['min_snr']:g} s.e.")
    axes[1].axhline(ed.settings["min_turn"], color="tab:red", ls=":", lw=1, label="threshold")
    for f in ed.forms:
        axes[1].plot(f.step, f.turn, "*", color="gold", mec="k", ms=12, zorder=5)
        axes[1].annotate(f"{f.step:,.0f}", (f.step, f.turn), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes[1].set_ylabel("turn (degrees)")
    axes[1].set_xlabel("training step $t$")
    axes[1].set_title(f"{label}turns and forms (stars)" if compact else
                      f"{label}turning points: forms (stars) where every PC plane also has a vertex")
    axes[1].legend(loc="best", **legend_kw)
    for ax in axes:
        ax.set_xscale("log")
        if stages is not None:
            _shade_stages(ax, stages, _stage_colors(stages.stages))
    if title:
        # above the first panel's own title, however many lines the suptitle has
        fig.suptitle(title, y=1.0 + 0.035 * (title.count("\n") + 1))
    return fig


def shade_stages(ax, result, label: bool = False, quantity: str = "LLC") -> None:
    """Shade ``result``'s stages (a :class:`stagewise.stages.StageResult`) on any over-training axis,
    as in :func:`plot_stages` (orange hues: LLC increasing, blue: decreasing; boundaries dashed;
    ``label`` numbers the stages on top), and put the axis on the standard log-step scale of
    ``result.steps``. For probe curves drawn against the LLC's stages (App. C figures). A legend
    below the figure explains the shading; ``quantity`` names the curve the stages come from."""
    _shade_stages(ax, result, _stage_colors(result.stages), label=label, quantity=quantity)
    _log_step_axis(ax, result.steps)


def plot_over_training(ax, steps, curves, result=None, ylabel: str | None = None, yscale: str = "linear",
                       colors=None, legend: bool = True, label_stages: bool = False, title: str | None = None,
                       **line_kw):
    """Draw curves ``{label: values over steps}`` against the training step on ``ax``, shaded by the
    stages of ``result`` (if given; else a plain log-step axis). Steps ≤ 0 are left out on the log
    axis. ``colors``: one colour per curve (default: the colour cycle, or ``color`` in ``line_kw``).
    Shade an axis once: when several calls draw on it, pass ``result`` to one of them; the figure
    gets a legend below it that explains the shading (:func:`add_stage_legend`). ``title``: the
    panel's title (what it shows). Returns ``ax``."""
    apply_style()
    steps = np.asarray(steps, dtype=float)
    keep = steps > 0
    colors = list(colors) if colors is not None else [None] * len(curves)
    if len(colors) != len(curves):
        raise ValueError(f"colors: need one per curve ({len(curves)}), got {len(colors)}")
    for (label, values), color in zip(curves.items(), colors):
        values = np.asarray(values, dtype=float)
        if values.shape != steps.shape:
            raise ValueError(f"curve {label!r} has shape {values.shape}, steps have {steps.shape}")
        kw = {"lw": 1.2, **line_kw, **({"color": color} if color is not None else {})}
        ax.plot(steps[keep], values[keep], label=label, **kw)
    if result is not None:
        shade_stages(ax, result, label=label_stages)
    else:
        ax.set_xscale("log")
    ax.set_yscale(yscale)
    ax.set_xlabel("training step $t$")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, pad=12 if (result is not None and label_stages) else 4)
    if legend and len(curves) > 1:
        ax.legend(loc="best")
    return ax


# ------------------------------------------------------------------------------------------------
# Per-token loss change rendered as text (main paper Fig. 5)

__all__ += ["plot_token_loss_change"]

_MONO_ADVANCE = 0.602  # advance width of DejaVu Sans Mono, in em


def plot_token_loss_change(tokens, change, width: int = 80, vmax: float | None = None, fontsize: float = 9.0,
                           title: str | None = None, cmap: str = "RdBu"):
    """The text of ``tokens``, each token on a background coloured by its loss change (Fig. 5).

    ``tokens``: the token strings in order (e.g. the ``token`` column of
    :func:`stagewise.probes.language.per_token_loss_change`); ``change``: loss_after - loss_before
    per token in nats (NaN, e.g. for the first token, is left white). Red: the later checkpoint
    predicts the token better; blue: worse (the paper's colours), on a scale symmetric about 0 up to
    ``vmax`` (default: the largest |change|). Monospace, wrapped at ``width`` characters; a newline
    inside a token is drawn as ``↵`` and breaks the line. Returns the Figure (save it with
    :func:`save_figure`).
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    apply_style()
    tokens = [str(t) for t in tokens]
    change = np.asarray(change, dtype=float)
    if change.shape != (len(tokens),):
        raise ValueError(f"change must hold one value per token ({len(tokens)}), got shape {change.shape}")
    if not isinstance(width, int) or width < 10:
        raise ValueError(f"width must be an integer >= 10 characters, got {width!r}")
    finite = np.isfinite(change)
    if vmax is None:
        vmax = float(np.abs(change[finite]).max()) if finite.any() else 1.0
    if not vmax > 0:
        raise ValueError(f"vmax must be > 0, got {vmax!r}")
    norm, colormap = Normalize(-vmax, vmax), plt.get_cmap(cmap)

    # lay the text out on a character grid: (row, column, text, value) per drawn piece
    pieces, row, col = [], 0, 0
    for text, value in zip(tokens, change):
        parts = text.replace("\t", "    ").split("\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            shown = part if last else part + "\u21b5"
            if col > 0 and col + len(shown) > width:
                row, col = row + 1, 0
            if shown:
                pieces.append((row, col, shown, value))
                col += len(shown)
            if not last:
                row, col = row + 1, 0
    n_rows = row + 1

    char_in = _MONO_ADVANCE * fontsize / 72
    line_in = 1.45 * fontsize / 72
    margin, bar_in = 0.15, 0.45
    title_in = 0.1 + 0.22 * (title.count("\n") + 1) if title else 0.0  # room for every line of the title
    fig_w, fig_h = width * char_in + 2 * margin, n_rows * line_in + bar_in + 2 * margin + title_in
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([margin / fig_w, (margin + bar_in) / fig_h, width * char_in / fig_w, n_rows * line_in / fig_h])
    ax.set_xlim(0, width)
    ax.set_ylim(n_rows, 0)
    ax.axis("off")
    for r, c, text, value in pieces:
        if np.isfinite(value):
            face = colormap(norm(value))
            ax.add_patch(Rectangle((c, r + 0.05), len(text), 0.9, facecolor=face, edgecolor="none", lw=0))
            luminance = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]
            color = "white" if luminance < 0.5 else "black"
        else:
            color = "0.35"
        ax.text(c, r + 0.5, text, family="DejaVu Sans Mono", fontsize=fontsize, va="center", ha="left",
                color=color, parse_math=False)
    cax = fig.add_axes([0.25, margin / fig_h, 0.5, 0.12 / fig_h])
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormap), cax=cax, orientation="horizontal")
    bar.ax.grid(False)
    bar.set_label("loss change (nats): red = better, blue = worse", fontsize=8)
    if title:
        fig.suptitle(title, y=1 - 0.1 / fig_h, va="top")
    return fig
