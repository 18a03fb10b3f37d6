"""Headline JSON: plain numbers, snake_case keys, stage records that match the detected stages."""

import json
import math

import numpy as np
import pytest

from stagewise.headline import read_headline, snake_case, stage_headline, to_json_value, write_headline
from stagewise.stages import detect_stages, synthetic_stage_curve


def test_values_become_plain_json_and_bad_keys_are_named():
    out = to_json_value({"a": np.float32(1.5), "b": np.array([1, 2]), "c": float("nan"), "d": (np.int64(3), None),
                         "e": np.bool_(True)})
    assert out == {"a": 1.5, "b": [1, 2], "c": None, "d": [3, None], "e": True}
    with pytest.raises(ValueError, match="snake_case.*'LLC max'.*stages"):
        to_json_value({"stages": {"LLC max": 1.0}})
    with pytest.raises(TypeError, match="object"):
        to_json_value({"x": object()})


def test_write_is_atomic_json_beside_the_figures(tmp_path):
    path = write_headline("02_regression_stages", "long", {"llc_max": np.float64(3.0), "missing": math.inf},
                          wall_time_s=12.5, directory=tmp_path)
    assert path == tmp_path / "02_regression_stages.json"
    data = json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert data == {"notebook": "02_regression_stages", "profile": "long", "wall_time_s": 12.5, "llc_max": 3.0,
                    "missing": None}
    assert read_headline("02_regression_stages", "long", directory=tmp_path) == data
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="reserved"):
        write_headline("x", "cpu", {"profile": "y"}, 1.0, directory=tmp_path)


def test_stage_headline_reports_boundaries_directions_and_llc_there():
    steps = np.unique(np.round(np.geomspace(1, 50_000, 60)))
    llc = synthetic_stage_curve(steps, [900, 6_500], [40.0, -15.0, 10.0], start=steps[0], initial=5.0)
    res = detect_stages(steps, llc, edge_plateaus=False)
    h = stage_headline(res, steps, llc, names=[f"S{i}" for i in range(len(res.stages))])
    assert [b["step"] for b in h["boundaries"]] == pytest.approx(list(res.boundaries))
    assert [s["llc_direction"] for s in h["stages"]] == [s.direction for s in res.stages]
    for b in h["boundaries"]:
        lo, hi = b["interval"]
        assert lo <= b["step"] <= hi or math.isclose(lo, hi)
        assert min(llc) - 1 <= b["llc"] <= max(llc) + 1
    assert h["llc_max"] == pytest.approx(max(llc)) and h["llc_last"] == pytest.approx(llc[-1])
    with pytest.raises(ValueError, match="names"):
        stage_headline(res, steps, llc, names=["only one"] * (len(res.stages) + 1))


def test_snake_case_keys_from_labels():
    assert snake_case("LLC of trained models") == "llc_of_trained_models"
    assert snake_case("training + outputs") == "training_outputs"
    with pytest.raises(ValueError, match="no letters"):
        snake_case(" + ")
