"""Stage signatures of the regression transformer: does each stage's named behavioural or structural
change (main paper §6, App. C.3–C.4) appear in a run, and when?

Everything here reads the probe table of :func:`stagewise.probes.regression.probe_checkpoints` (one
row per checkpoint) and a stage detection (:func:`stagewise.stages.detect_stages`); nothing is
eyeballed:

* :func:`align_stages` names a run's detected stages after the paper's LR1–LR5 by their order and
  LLC direction (the paper's + + − − + sequence), so a compressed run whose LR3 and LR4 merge gets
  one stage "LR3+LR4"; :func:`boundary_table` then pairs detected boundaries with the paper's.
* :func:`change_window` (a rise or fall), :func:`curve_minimum` and :func:`dip` (a transient fall
  and recovery) measure one probe curve; a :class:`Signature` says which of them the paper names for
  which stage, with a threshold; :func:`signature_table` evaluates a list of them.
* :func:`paper_signatures` is the list for §6 / App. C with the thresholds argued in its docstring.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "PaperStage",
    "PAPER_STAGES",
    "PAPER_NUM_STEPS",
    "align_stages",
    "boundary_table",
    "Change",
    "change_window",
    "curve_minimum",
    "Dip",
    "dip",
    "Signature",
    "evaluate_signature",
    "signature_table",
    "paper_signatures",
]


@dataclass(frozen=True)
class PaperStage:
    """One of the paper's regression stages: name, LLC direction, [start, end) in steps of 500k."""

    name: str
    direction: str  # "increase" | "decrease"
    start: int
    end: int


PAPER_NUM_STEPS = 500_000
PAPER_STAGES: tuple[PaperStage, ...] = (  # main paper §6, Fig. 1b
    PaperStage("LR1", "increase", 0, 1_000),
    PaperStage("LR2", "increase", 1_000, 40_000),
    PaperStage("LR3", "decrease", 40_000, 126_000),
    PaperStage("LR4", "decrease", 126_000, 320_000),
    PaperStage("LR5", "increase", 320_000, 500_000),
)


def _runs(directions: Sequence[str]) -> list[list[int]]:
    """Indices grouped into maximal runs of equal direction."""
    runs: list[list[int]] = []
    for i, d in enumerate(directions):
        if runs and directions[runs[-1][0]] == d:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def align_stages(stages, paper: Sequence[PaperStage] = PAPER_STAGES,
                 flat_fraction: float = 0.1) -> list[tuple[str, ...]] | None:
    """Name detected stages after the paper's, by order and LLC direction; None if they do not fit.

    ``stages`` are :class:`stagewise.stages.Stage` objects (``direction``, ``delta``). A first stage
    whose |Δλ̂| is below ``flat_fraction`` of the largest |Δλ̂| is a plateau (found with
    ``edge_plateaus=True``: the LLC is flat while the task prior is learnt) and joins the run of the
    stage after it. Only the first: a small final rise is the paper's LR5 (small ↑ too).

    Both sequences are cut into runs of equal direction (the paper's: LR1–LR2 ↑, LR3–LR4 ↓, LR5 ↑)
    and paired in order from the start; a run with fewer runs than the paper's (e.g. one that ends
    in the LLC decrease, its final small rise not resolved) leaves the paper's last stages unmatched.
    Within a pair of runs the stages are paired one to one from the start, the last detected stage
    taking every paper stage left over (two paper stages merged into one) and extra detected stages
    repeating the last paper stage. Returns, per detected stage, the tuple of paper stage names it
    corresponds to; None if the run starts with an LLC decrease or has more runs than the paper.
    """
    stages = list(stages)
    if not stages:
        raise ValueError("stages must hold at least one stage")
    if not 0 <= flat_fraction < 1:
        raise ValueError(f"flat_fraction must be in [0, 1), got {flat_fraction}")
    dirs = [st.direction for st in stages]
    if len(stages) > 1 and abs(stages[0].delta) < flat_fraction * max(abs(st.delta) for st in stages):
        dirs[0] = dirs[1]
    ours, theirs = _runs(dirs), _runs([p.direction for p in paper])
    if len(ours) > len(theirs) or dirs[0] != paper[0].direction:
        return None
    labels: list[tuple[str, ...]] = []
    for run, prun in zip(ours, theirs):
        names = [paper[j].name for j in prun]
        for k in range(len(run)):
            if k < len(run) - 1:
                labels.append((names[min(k, len(names) - 1)],))
            else:
                labels.append(tuple(names[min(k, len(names) - 1):]))
    return labels


def boundary_table(boundaries, intervals, labels: Sequence[tuple[str, ...]], num_steps: int,
                   paper: Sequence[PaperStage] = PAPER_STAGES, paper_num_steps: int = PAPER_NUM_STEPS) -> pd.DataFrame:
    """Detected boundaries against the paper's, one row per paper boundary (LR1|LR2, ..., LR4|LR5).

    ``labels`` is :func:`align_stages`'s output for the stages between ``boundaries`` (one more
    label than boundaries). A detected boundary corresponds to the paper boundary between the last
    paper stage of the stage before it and the first of the stage after it; paper boundaries inside
    a merged stage ("LR3+LR4") are NaN (not resolved). ``rescaled`` is the paper's step times
    ``num_steps / paper_num_steps``, a naive guide only (a shorter one-cycle schedule compresses
    stages by different factors).
    """
    boundaries = np.asarray(boundaries, dtype=float)
    intervals = np.asarray(intervals, dtype=float).reshape(len(boundaries), 2)
    if len(labels) != len(boundaries) + 1:
        raise ValueError(f"labels must name {len(boundaries) + 1} stages (one more than the {len(boundaries)} "
                         f"boundaries), got {len(labels)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    found = {(labels[i][-1], labels[i + 1][0]): i for i in range(len(boundaries))}
    rows = []
    for before, after in zip(paper[:-1], paper[1:]):
        i = found.get((before.name, after.name))
        rows.append({
            "boundary": f"{before.name}|{after.name}", "paper": after.start,
            "rescaled": after.start * num_steps / paper_num_steps,
            "detected": boundaries[i] if i is not None else np.nan,
            "interval_lo": intervals[i, 0] if i is not None else np.nan,
            "interval_hi": intervals[i, 1] if i is not None else np.nan,
        })
    return pd.DataFrame(rows)


# --- one probe curve ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """The largest monotone rise (or fall) of a curve and when it happened.

    ``size`` ≥ 0 is |v(end) − v(begin)| over the best pair of checkpoints begin ≤ end; ``start``,
    ``step`` and ``end`` are the first checkpoints (from begin on) at which 10%, 50% and 90% of it
    is covered; ``before`` and ``after`` are the values at the two ends.
    """

    size: float
    start: float
    step: float
    end: float
    before: float
    after: float


def _check_curve(steps, values) -> tuple[np.ndarray, np.ndarray]:
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if steps.ndim != 1 or steps.shape != values.shape or len(steps) < 2:
        raise ValueError(f"steps and values must be 1-D of the same length >= 2, got {steps.shape}, {values.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    return steps, values


def change_window(steps, values, direction: str, fractions: tuple[float, float, float] = (0.1, 0.5, 0.9)) -> Change:
    """The largest rise (``direction="rise"``) or fall (``"fall"``) of a probe curve over checkpoints."""
    steps, values = _check_curve(steps, values)
    if direction not in ("rise", "fall"):
        raise ValueError(f"direction must be 'rise' or 'fall', got {direction!r}")
    if not all(0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"fractions must be increasing in (0, 1), got {fractions}")
    v = values if direction == "rise" else -values
    low = np.minimum.accumulate(v)
    gain = v - low
    j = int(np.argmax(gain))
    i = int(np.argmin(v[: j + 1]))
    size = float(gain[j])
    marks = []
    for f in fractions:
        k = i + int(np.argmax(v[i: j + 1] >= v[i] + f * size)) if size > 0 else i
        marks.append(float(steps[k]))
    return Change(size, *marks, float(values[i]), float(values[j]))


def curve_minimum(steps, values) -> tuple[float, float]:
    """(step, value) of the curve's minimum (first checkpoint attaining it)."""
    steps, values = _check_curve(steps, values)
    i = int(np.argmin(values))
    return float(steps[i]), float(values[i])


@dataclass(frozen=True)
class Dip:
    """A transient fall and recovery: the minimum at ``step``, ``depth`` = first value − minimum,
    ``rebound`` = largest value after the minimum − minimum; ``start``/``end`` are the last checkpoint
    before the minimum still above half the depth and the first after it past half the rebound."""

    step: float
    value: float
    depth: float
    rebound: float
    start: float
    end: float


def dip(steps, values) -> Dip:
    """Measure the dip of a curve around its global minimum (e.g. ICL_{D:K} early in LR2, Fig. C.3)."""
    steps, values = _check_curve(steps, values)
    i = int(np.argmin(values))
    vmin = float(values[i])
    depth = float(values[0] - vmin)
    rebound = float(values[i:].max() - vmin)
    above = np.nonzero(values[: i + 1] >= vmin + depth / 2)[0] if depth > 0 else np.array([i])
    start = float(steps[above[-1]]) if len(above) else float(steps[i])
    past = np.nonzero(values[i:] >= vmin + rebound / 2)[0] if rebound > 0 else np.array([0])
    end = float(steps[i + past[0]])
    return Dip(float(steps[i]), vmin, depth, rebound, start, end)


# --- signatures -----------------------------------------------------------------------------------

KINDS = ("rise", "fall", "minimum", "dip")


@dataclass(frozen=True)
class Signature:
    """A change the paper names for one of its stages, as a test on probe columns.

    ``columns`` is a column name or an ``fnmatch`` pattern (``"attention.B*y.normalised_entropy"``):
    of the matching columns the one with the largest effect is reported. ``kind``/``threshold``:

    * ``"rise"`` / ``"fall"``: :func:`change_window`; appears if its size ≥ ``threshold`` (with
      ``relative``, size / |value before| ≥ ``threshold``); *when* = the 50% step (``at="mid"``), or
      the 10% step (``at="start"``) where the paper names the onset ("starting at the end of LR2");
      window 10–90%;
    * ``"minimum"``: appears if the minimum ≤ ``threshold``; *when* = the minimum;
    * ``"dip"``: :func:`dip`; appears if depth and rebound are both ≥ ``threshold``; *when* = the
      minimum, window from half-depth to half-rebound.
    """

    stage: str
    description: str
    columns: str
    kind: str
    threshold: float
    relative: bool = False
    paper_when: str = ""
    at: str = "mid"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.at not in ("start", "mid"):
            raise ValueError(f"at must be 'start' or 'mid', got {self.at!r}")
        if self.at == "start" and self.kind not in ("rise", "fall"):
            raise ValueError("at='start' applies to kind 'rise' or 'fall' only")
        if self.relative and self.kind not in ("rise", "fall"):
            raise ValueError("relative thresholds apply to kind 'rise' or 'fall' only")


def _measure(steps, values, sig: Signature) -> dict:
    if sig.kind in ("rise", "fall"):
        c = change_window(steps, values, sig.kind)
        effect = c.size / abs(c.before) if sig.relative else c.size
        if sig.relative and c.before == 0:
            effect = np.inf if c.size > 0 else 0.0
        when = c.start if sig.at == "start" else c.step
        return {"effect": effect, "appears": effect >= sig.threshold, "step": when, "start": c.start, "end": c.end,
                "value_before": c.before, "value_after": c.after}
    if sig.kind == "minimum":
        step, value = curve_minimum(steps, values)
        return {"effect": value, "appears": value <= sig.threshold, "step": step, "start": step, "end": step,
                "value_before": float(values[0]), "value_after": value}
    d = dip(steps, values)
    return {"effect": min(d.depth, d.rebound), "appears": min(d.depth, d.rebound) >= sig.threshold, "step": d.step,
            "start": d.start, "end": d.end, "value_before": float(values[0]), "value_after": d.value}


def evaluate_signature(probes: pd.DataFrame, sig: Signature) -> dict:
    """Measure ``sig`` on a probe table (a ``step`` column and the probe columns).

    Returns ``column`` (the matching column with the largest effect; for ``"minimum"`` the lowest),
    ``appears`` (bool), ``step`` (when), ``start``/``end`` (its window), ``effect`` (by kind: the
    size or relative size of the change, the minimum, or min(depth, rebound) of the dip),
    ``value_before``/``value_after``.
    """
    if "step" not in probes.columns:
        raise ValueError("probes must have a 'step' column")
    columns = [c for c in probes.columns if fnmatch.fnmatchcase(c, sig.columns)]
    if not columns:
        raise ValueError(f"no probe column matches {sig.columns!r}")
    table = probes.sort_values("step")
    steps = table["step"].to_numpy(dtype=float)
    sign = -1.0 if sig.kind == "minimum" else 1.0  # the lowest minimum, else the largest effect
    best = None
    for col in columns:
        m = {"column": col, **_measure(steps, table[col].to_numpy(dtype=float), sig)}
        if best is None or sign * m["effect"] > sign * best["effect"]:
            best = m
    return best


def _stage_index(step: float, boundaries: np.ndarray) -> int:
    return int(np.searchsorted(boundaries, step, side="right"))


def signature_table(probes: pd.DataFrame, signatures: Sequence[Signature], boundaries=(),
                    labels: Sequence[tuple[str, ...]] | None = None) -> pd.DataFrame:
    """One row per signature: the paper's stage and claim, whether it appears, when, and in which of
    the run's detected stages (``boundaries``; numbered from 1) it falls. With ``labels`` (from
    :func:`align_stages`) the detected stage is also named after the paper's, and
    ``in_paper_stage`` says whether that name includes the signature's paper stage.
    """
    boundaries = np.sort(np.asarray(boundaries, dtype=float))
    if labels is not None and len(labels) != len(boundaries) + 1:
        raise ValueError(f"labels must name {len(boundaries) + 1} stages, got {len(labels)}")
    rows = []
    for sig in signatures:
        m = evaluate_signature(probes, sig)
        idx = _stage_index(m["step"], boundaries)
        row = {"paper stage": sig.stage, "signature": sig.description, "paper when": sig.paper_when, **m,
               "our stage": idx + 1}
        if labels is not None:
            row["our stage name"] = "+".join(labels[idx])
            row["in_paper_stage"] = m["appears"] and sig.stage in labels[idx]
        rows.append(row)
    return pd.DataFrame(rows)


def paper_signatures(noise_variance: float, ridge: Mapping[str, float]) -> list[Signature]:
    """The named stage signatures of §6 and App. C.3–C.4, with thresholds fixed from the paper's own
    numbers or from the ideal predictor, never from our runs:

    * LR1: E[ŷ²] reaches a minimum below σ² ("a minimum of 0.1, smaller than the target noise σ²").
    * LR2: ICL_{1:D} rises by at least half of ridge's ICL_{1:D} (``ridge["icl_1_D"]``); ICL_{D:K}
      dips (late tokens temporarily worse) by at least 10% of ridge's ICL_{D:K}; the token
      embedding's smallest component loses half its share of variance (C.5a: 2.9% → "half that");
      the positional embedding's effective rank falls by a quarter (C.5b; the paper gives no number),
      both timed by their onset, which is what the paper places ("starting at the end of LR2");
      the token embedding's cosine with the unembedding subspace rises by 0.2 (C.5c, no number);
      some head hardens: a normalised attention entropy falls by 0.3 (C.8; "soft becomes hard").
    * LR3: the final LayerNorm collapses: a majority (0.5) of its weights |γ| < 0.1 (C.6); OOD
      inputs (g = 10): the normalised loss first improves, then worsens, each by ≥ 0.05 (C.4).
    * LR4: the collapse spreads to the first pre-attention LayerNorm, "a smaller fraction": ≥ 0.2 (C.7).

    ``ridge`` is :func:`~stagewise.probes.regression.behaviour_summary` of the ridge predictor on the
    probes' evaluation batch.
    """
    for key in ("icl_1_D", "icl_D_K"):
        if key not in ridge or not ridge[key] > 0:
            raise ValueError(f"ridge must hold a positive {key!r} (ridge's ICL score on the evaluation batch)")
    if not noise_variance > 0:
        raise ValueError(f"noise_variance (σ²) must be > 0, got {noise_variance}")
    return [
        Signature("LR1", "E[ŷ²] reaches a minimum below σ² (task prior)", "behaviour.distance_to_zero", "minimum",
                  noise_variance, paper_when="just after LR1 (~1k)"),
        Signature("LR2", "ICL emerges: ICL_{1:D} rises", "behaviour.icl_1_D", "rise", 0.5 * ridge["icl_1_D"],
                  paper_when="first half of LR2"),
        Signature("LR2", "late tokens temporarily worse: ICL_{D:K} dips", "behaviour.icl_D_K", "dip",
                  0.1 * ridge["icl_D_K"], paper_when="early LR2"),
        Signature("LR2", "token embedding collapse: smallest component's variance share halves (onset)",
                  "embedding.min_variance_fraction", "fall", 0.5, relative=True, paper_when="starts at the end of LR2",
                  at="start"),
        Signature("LR2", "positional embedding collapse: effective rank falls (onset)", "positional.effective_rank",
                  "fall", 0.25, relative=True, paper_when="starts in the second half of LR2", at="start"),
        Signature("LR2", "token embedding aligns with the unembedding subspace", "alignment.unembedding", "rise", 0.2,
                  paper_when="LR2-LR3"),
        Signature("LR2", "attention heads harden (normalised entropy falls)", "attention.*.normalised_entropy", "fall",
                  0.3, paper_when="LR2 (C.8: stages line up with entropy curves)"),
        Signature("LR3", "final LayerNorm collapse: most |γ| < 0.1", "layer_norm.ln_final.frac_small_weight", "rise",
                  0.5, paper_when="LR3"),
        Signature("LR3", "OOD inputs (g=10): better, then worse", "ood.inputs.g=10.normalised_loss", "dip", 0.05,
                  paper_when="worse from ~75k (LR3)"),
        Signature("LR4", "LayerNorm collapse spreads to the first attention LayerNorm",
                  "layer_norm.blocks.0.ln_attn.frac_small_weight", "rise", 0.2, paper_when="LR4"),
    ]
