"""Language-model stage signatures: derived columns, and signatures firing exactly when planted."""

import numpy as np
import pandas as pd
import pytest

from stagewise.probes.language_signatures import (LM_PAPER_STAGES, PRE_LM1, add_derived_columns, first_crossing,
                                                  first_resolved_step, lm_paper_signatures, name_lm_stages)
from stagewise.probes.regression_signatures import align_stages, signature_table
from stagewise.stages import Stage


def _table(prev_onset=None, induction_onset=None):
    steps = np.unique(np.round(np.geomspace(1, 10_000, 40))).astype(int)
    s = np.log(steps)
    sig = lambda onset: 1 / (1 + np.exp(-(s - np.log(onset)) * 6))  # noqa: E731
    t = pd.DataFrame({"step": steps})
    t["loss"] = 8 - 4 * sig(300)
    t["loss.pos_ablated"] = t["loss"] + 0.5 * sig(1000)
    t["bigram.optimum"] = 3.0
    t["bigram.score"] = 3.2 + 4 * (1 - sig(300))
    t["ngram.3.score"] = 1.5 - 0.5 * sig(800)
    t["icl_score"] = -0.1 - (0.8 * sig(induction_onset) if induction_onset else 0)
    for h in range(3):
        t[f"previous_token.0:{h}"] = 0.03 + (0.8 * sig(prev_onset) if prev_onset and h == 1 else 0)
        t[f"previous_token.1:{h}"] = 0.03
        t[f"prefix_matching.0:{h}"] = 0.01
        t[f"prefix_matching.1:{h}"] = 0.01 + (0.7 * sig(induction_onset) if induction_onset and h == 2 else 0)
    t["previous_token.chance"] = 0.03
    return t


def test_derived_columns():
    t = add_derived_columns(_table(prev_onset=2000))
    assert np.allclose(t["bigram.excess"], t["bigram.score"] - 3.0)
    assert np.allclose(t["pos_ablation.gap"], t["loss.pos_ablated"] - t["loss"])
    assert np.allclose(t["previous_token.max.0"], t["previous_token.0:1"])  # the head that rises
    assert "previous_token.max.chance" not in t.columns  # only head columns feed the maxima
    with pytest.raises(ValueError, match="bigram.score"):
        add_derived_columns(t.drop(columns=["bigram.score"]))


def test_signatures_fire_when_planted_and_not_otherwise():
    planted = signature_table(add_derived_columns(_table(prev_onset=2000, induction_onset=5000)), lm_paper_signatures(2))
    assert planted["appears"].all()
    prev = planted[planted["paper stage"] == "LM3"].iloc[0]
    assert 1000 < prev["step"] < 2000  # the onset (10% of the rise) precedes the midpoint
    absent = signature_table(add_derived_columns(_table()), lm_paper_signatures(2))
    assert absent.set_index("paper stage").loc[["LM3", "LM4"], "appears"].eq(False).all()
    assert absent.set_index("paper stage").loc["LM1", "appears"]  # the bigram plateau is there either way
    assert len(lm_paper_signatures(1)) == 4 and all(s.stage != "LM4" for s in lm_paper_signatures(1))


def test_lm_stages_align_with_the_paper_sequence():
    mk = lambda d: Stage(0, 1, d, 1, 1.0 if d == "increase" else -1.0)  # noqa: E731
    stages = [mk("increase"), mk("increase"), mk("decrease"), mk("increase")]
    labels = align_stages(stages, LM_PAPER_STAGES)
    assert labels[2] == ("LM3",) and labels[-1] == ("LM4", "LM5")
    assert align_stages([mk("decrease")], LM_PAPER_STAGES) is None


def test_early_transient_before_the_papers_first_checkpoint_is_not_named():
    # our cpu run: a rise to step 11 and a dip to 24 (unseen by the paper, which starts at step 100),
    # then the rise that ends at the bigram plateau and a flat stretch
    st = [Stage(1, 11, "increase", 10, 21), Stage(11, 24, "decrease", 13, -3), Stage(24, 1288, "increase", 1264, 42),
          Stage(1288, 4000, "increase", 2712, 2)]
    assert name_lm_stages(st) == [(PRE_LM1,), (PRE_LM1,), ("LM1",), ("LM2",)]
    # without the cut, the 13-step dip would be misread as LM3 (the paper's 2,000-step decrease)
    assert align_stages(st, LM_PAPER_STAGES)[1] == ("LM3",)
    # a later cut moves the naming; all stages early -> all unnamed; bad input
    assert name_lm_stages(st, first_resolved_step=1) == align_stages(st, LM_PAPER_STAGES)
    assert name_lm_stages(st[:2]) == [(PRE_LM1,), (PRE_LM1,)]
    with pytest.raises(ValueError, match="first_resolved_step"):
        name_lm_stages(st, first_resolved_step=-1)
    with pytest.raises(ValueError, match="at least one stage"):
        name_lm_stages([])


def test_first_resolved_step_is_the_papers_first_checkpoint_unless_the_run_is_too_short():
    assert first_resolved_step(4000) == 100 and first_resolved_step(1000) == 100
    assert first_resolved_step(999) == 0 and first_resolved_step(24) == 0


def test_first_crossing():
    assert first_crossing([1, 2, 3, 4], [0.1, 0.3, 0.5, 0.2], 0.4) == 3
    assert np.isnan(first_crossing([1, 2], [0.1, 0.2], 0.4))
    with pytest.raises(ValueError, match="equal length"):
        first_crossing([1, 2], [0.1], 0.4)
