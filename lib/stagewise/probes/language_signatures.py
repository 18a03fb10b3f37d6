"""Stage signatures of the two-layer language model: does each stage's named change (main paper §5,
App. B) appear in a run, and when?

The machinery (stage alignment by LLC direction, boundary table, rise / fall / minimum signatures)
is the regression setting's, :mod:`stagewise.probes.regression_signatures`; here are the language
model's stages (LM1–LM5 with the LLC directions of Fig. 1a) and its signatures, read off the probe
table of :func:`stagewise.probes.language.lm_probe_checkpoints` with thresholds fixed from the
paper's numbers or from chance levels, never from our runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stagewise.probes.regression_signatures import PaperStage, Signature, align_stages

__all__ = ["LM_PAPER_STAGES", "LM_PAPER_NUM_STEPS", "LM_PAPER_FIRST_CHECKPOINT", "PRE_LM1", "add_derived_columns",
           "lm_paper_signatures", "first_crossing", "first_resolved_step", "name_lm_stages"]

LM_PAPER_NUM_STEPS = 50_000
# §5 and Fig. 1a: the LLC rises in LM1 and LM2, falls in LM3 and rises again in LM4; LM5 shows "no
# significant changes" (we label it increasing, as the curve drifts up in Fig. 1a / B.2).
LM_PAPER_STAGES: tuple[PaperStage, ...] = (
    PaperStage("LM1", "increase", 0, 900),
    PaperStage("LM2", "increase", 900, 6_500),
    PaperStage("LM3", "decrease", 6_500, 8_500),
    PaperStage("LM4", "increase", 8_500, 17_000),
    PaperStage("LM5", "increase", 17_000, 50_000),
)
# App. D.1: checkpoints every 10 steps, but "a majority of analysis used checkpoints every 100 steps":
# whatever the LLC does before step 100 is not resolved in the paper's figures.
LM_PAPER_FIRST_CHECKPOINT = 100
PRE_LM1 = "pre-LM1"


def add_derived_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The probe table with the columns the signatures read:

    * ``bigram.excess`` = bigram score − its optimum (nats above the empirical bigram entropy, eq. 12);
    * ``pos_ablation.gap`` = validation loss with the positional embedding zero-ablated − without (B.3);
    * ``previous_token.max.{l}``, ``prefix_matching.max.{l}`` = the largest head score in layer l.
    """
    out = table.copy()
    for col in ("bigram.score", "bigram.optimum", "loss", "loss.pos_ablated"):
        if col not in out.columns:
            raise ValueError(f"probe table has no column {col!r} (is it lm_probe_checkpoints' output?)")
    out["bigram.excess"] = out["bigram.score"] - out["bigram.optimum"]
    out["pos_ablation.gap"] = out["loss.pos_ablated"] - out["loss"]
    for prefix in ("previous_token", "prefix_matching"):
        layers = sorted({c.split(".")[1].split(":")[0] for c in out.columns
                         if c.startswith(prefix + ".") and ":" in c})
        for layer in layers:
            cols = [c for c in out.columns if c.startswith(f"{prefix}.{layer}:")]
            out[f"{prefix}.max.{layer}"] = out[cols].max(axis=1)
    return out


def lm_paper_signatures(n_layers: int = 2) -> list[Signature]:
    """The named signatures of §5 / App. B with fixed thresholds:

    * LM1 — the bigram score reaches a minimum "only .3 nats above" the bigram entropy (§5.1): appears
      if the minimum of ``bigram.excess`` is ≤ 0.5 nats (0.3 plus slack for our smaller batch);
    * LM2 — the positional embedding comes into use: the loss with it ablated rises ≥ 0.1 nats above
      the plain loss (B.3; the paper's gap grows to several nats at late positions);
    * LM2 — n-grams: the 3-gram score (ℓ_test / ℓ_gram, B.3.2) falls by ≥ 10%;
    * LM3 — previous-token heads: the best layer-0 previous-token score rises by ≥ 0.3 (from ≈ chance,
      1/40 on sequences of 16–64 tokens; the classification threshold is 0.4);
    * LM4 — induction heads: the best layer-1 prefix-matching score rises by ≥ 0.2 (chance ≈ 0.01);
    * LM4 — in-context learning: the ICL score (loss late − loss early in the context) falls by ≥ 0.2
      nats (Fig. 4b bottom falls by ≈ 1 nat).

    Only the first two stages' signatures exist for a one-layer model (no layer-1 heads).
    """
    sigs = [
        Signature("LM1", "bigram score minimum within 0.5 nats of the bigram entropy", "bigram.excess", "minimum",
                  0.5, paper_when="≈900 (LM1|LM2)"),
        Signature("LM2", "positional embedding used (ablated loss ≥ 0.1 nats above)", "pos_ablation.gap", "rise",
                  0.1, paper_when="LM2 (900–6.5k)", at="start"),
        Signature("LM2", "3-gram score falls ≥ 10%", "ngram.3.score", "fall", 0.1, relative=True,
                  paper_when="LM2 (900–6.5k)"),
        Signature("LM3", "previous-token head forms (layer 0 score +0.3)", "previous_token.max.0", "rise", 0.3,
                  paper_when="LM3 (6.5k–8.5k)", at="start"),
    ]
    if n_layers >= 2:
        sigs += [
            Signature("LM4", "induction head forms (layer 1 prefix matching +0.2)", "prefix_matching.max.1", "rise",
                      0.2, paper_when="LM4 (8.5k–17k)", at="start"),
            Signature("LM4", "ICL score drops ≥ 0.2 nats", "icl_score", "fall", 0.2, paper_when="LM4 (8.5k–17k)"),
        ]
    return sigs


def first_crossing(steps, values, threshold: float) -> float:
    """The first step at which ``values`` reach ``threshold`` (NaN if never): e.g. when a head's
    score first passes the classification threshold."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"steps and values must be 1-d of equal length, got {steps.shape} and {values.shape}")
    hit = np.nonzero(values >= threshold)[0]
    return float(steps[hit[0]]) if len(hit) else float("nan")


def first_resolved_step(last_step: float) -> float:
    """The first of a run's steps the paper's analysis could resolve: its first analysed checkpoint
    (step 100), or 0 for runs shorter than 10× that (e.g. ``smoke``), which have nothing past it."""
    return LM_PAPER_FIRST_CHECKPOINT if last_step >= 10 * LM_PAPER_FIRST_CHECKPOINT else 0


def name_lm_stages(stages, first_resolved_step: float = LM_PAPER_FIRST_CHECKPOINT,
                   paper=LM_PAPER_STAGES) -> list[tuple[str, ...]] | None:
    """Name detected LM stages after the paper's, ignoring what the paper could not see.

    Our runs analyse checkpoints from step 1, the paper's from step 100, so our first stages can be
    an early transient (the LLC of a freshly initialised model rising and dipping within a few dozen
    steps) that has no counterpart in Fig. 1a. Every stage that ends at or before
    ``first_resolved_step`` is labelled ``("pre-LM1",)``; the rest are named by
    :func:`~stagewise.probes.regression_signatures.align_stages` (order and LLC direction). Returns
    one tuple of names per stage, or None when the resolved stages do not fit the paper's sequence.
    """
    stages = list(stages)
    if not stages:
        raise ValueError("stages must hold at least one stage")
    if not first_resolved_step >= 0:
        raise ValueError(f"first_resolved_step must be >= 0, got {first_resolved_step}")
    early = [st for st in stages if st.end <= first_resolved_step]
    resolved = stages[len(early):]
    if not resolved:
        return [(PRE_LM1,)] * len(stages)
    labels = align_stages(resolved, paper)
    return None if labels is None else [(PRE_LM1,)] * len(early) + labels
