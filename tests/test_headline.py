"""Headline JSON: plain numbers, snake_case keys, stage records that match the detected stages."""

import json
import math

import numpy as np
import pytest

from stagewise.hardware import machine_description
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


@pytest.fixture
def fresh_run(tmp_cache, monkeypatch):
    """An empty cache and a run that has written nothing to it yet."""
    from stagewise.cache import RUN_ENV_VAR

    monkeypatch.setenv(RUN_ENV_VAR, "headline-test-run")
    return tmp_cache


def test_write_is_atomic_json_beside_the_figures(tmp_path, fresh_run):
    path = write_headline("02_regression_stages", "long", {"llc_max": np.float64(3.0), "missing": math.inf},
                          wall_time_s=12.5, directory=tmp_path)
    assert path == tmp_path / "02_regression_stages.json"
    data = json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert data == {"notebook": "02_regression_stages", "profile": "long", "wall_time_s": 12.5,
                    "machine": machine_description(), "artifacts_computed": 0, "llc_max": 3.0, "missing": None}
    assert read_headline("02_regression_stages", "long", directory=tmp_path) == data
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="reserved"):
        write_headline("x", "cpu", {"profile": "y"}, 1.0, directory=tmp_path)
    with pytest.raises(ValueError, match="reserved.*cached_rerun_s"):
        write_headline("x", "cpu", {"cached_rerun_s": 1.0}, 1.0, directory=tmp_path)
    with pytest.raises(ValueError, match="reserved.*machine"):
        write_headline("x", "cpu", {"machine": "mine"}, 1.0, directory=tmp_path)


def test_a_rerun_served_from_the_cache_keeps_the_measured_seconds(tmp_path, fresh_run, monkeypatch):
    from stagewise.cache import RUN_ENV_VAR, artifact_dir, atomic_save

    def write(wall, profile="cpu"):
        timings = {"training": wall / 2, "total": wall}
        path = write_headline("02_x", profile, {"llc_max": 3.0, "timings_s": timings}, wall, directory=tmp_path)
        return json.loads(path.read_text())

    atomic_save(1, artifact_dir("llc", {"step": 1}) / "value.pt")  # this run computed an estimate
    first = write(300.0)
    assert (first["wall_time_s"], first["artifacts_computed"], first["timings_s"]["total"]) == (300.0, 1, 300.0)
    assert "cached_rerun_s" not in first

    assert first["machine"] == machine_description()
    measured_on = "2-core Some CPU (avx512_bf16), SGLD in bf16"  # as if measured on another machine
    (tmp_path / "02_x.json").write_text(json.dumps({**first, "machine": measured_on}))

    monkeypatch.setenv(RUN_ENV_VAR, "rerun-from-cache")  # loads everything, writes nothing
    rerun = write(4.0)
    assert rerun["wall_time_s"] == 300.0 and rerun["timings_s"] == first["timings_s"]
    assert rerun["machine"] == measured_on  # the seconds kept, with where they were measured
    assert (rerun["cached_rerun_s"], rerun["artifacts_computed"]) == (4.0, 0)
    assert write(5.0)["wall_time_s"] == 300.0  # kept over any number of cached reruns

    assert write(6.0, profile="long")["wall_time_s"] == 6.0  # the file's seconds are another profile's: not kept

    monkeypatch.setenv(RUN_ENV_VAR, "recompute")  # a run that computes anything measures itself
    atomic_save(2, artifact_dir("llc", {"step": 2}) / "value.pt")
    third = write(120.0, profile="long")
    assert (third["wall_time_s"], third["artifacts_computed"], third["timings_s"]["total"]) == (120.0, 1, 120.0)
    assert "cached_rerun_s" not in third and third["machine"] == machine_description()


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
