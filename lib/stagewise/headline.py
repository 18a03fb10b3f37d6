"""Headline numbers as data: each notebook writes ``<figures folder>/<notebook>.json``.

The file is plain JSON (numbers never strings, keys in snake_case, NaN/inf written as ``null``),
written atomically beside the notebook's figures, e.g. ``figures/02_regression_stages.json`` or
``figures/long/01_lm_stages.json``. The docs' results pages and the README's verdict table are
generated from these files.

* :func:`stage_headline` — detected boundaries (with their intervals), stage directions and names,
  and the LLC at each boundary, from a :class:`stagewise.stages.StageResult`;
* :func:`write_headline` — sanitises and writes one notebook's record (a rerun served entirely from
  the cache keeps the measured seconds of the record it replaces).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["stage_headline", "write_headline", "read_headline", "to_json_value", "snake_case"]

_KEY = re.compile(r"^[a-z0-9_]+$")


def snake_case(text: str) -> str:
    """``"LLC of trained models"`` -> ``"llc_of_trained_models"`` (for keys made from labels)."""
    out = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")
    if not out:
        raise ValueError(f"{text!r} has no letters or digits to make a key of")
    return out


def to_json_value(value: Any, path: str = "") -> Any:
    """``value`` as plain JSON: numpy scalars/arrays to numbers/lists, NaN/inf to None, tuples to
    lists; dict keys must be snake_case strings (a ValueError names the offending key path)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not _KEY.match(k):
                raise ValueError(f"headline keys must be snake_case ([a-z0-9_]+), got {k!r} at {path or 'top level'}")
            out[k] = to_json_value(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist(), path)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"headline value at {path or 'top level'} has type {type(value).__name__}, not a JSON type")


def stage_headline(result, steps: Sequence[float], llc: Sequence[float], names: Sequence[str] | None = None) -> dict:
    """The stages of one LLC curve as data.

    ``result`` is :func:`stagewise.stages.detect_stages`' output for the curve (``steps``, ``llc``);
    ``names`` optional stage names (one per stage, e.g. ``["LR1", "LR2", "LR3+LR4", "LR5"]``).
    The LLC at a boundary is the GP-smoothed curve there (interpolated in log step).
    """
    stages = list(result.stages)
    if names is not None and len(names) != len(stages):
        raise ValueError(f"names must name each of the {len(stages)} stages, got {len(names)}")
    x = result.to_x(np.asarray(result.steps, dtype=float))
    at = np.interp(result.to_x(np.asarray(result.boundaries, dtype=float)), x, result.smoothed) \
        if len(result.boundaries) else np.array([])
    boundaries = [{"step": float(b), "interval": [float(lo), float(hi)], "llc": float(v)}
                  for b, (lo, hi), v in zip(result.boundaries, result.intervals, at)]
    return {
        "boundaries": boundaries,
        "stages": [{"name": None if names is None else names[i], "start": float(s.start), "end": float(s.end),
                    "llc_direction": s.direction, "llc_change": float(s.delta)} for i, s in enumerate(stages)],
        "llc_first": float(np.asarray(llc)[0]),
        "llc_max": float(np.nanmax(llc)),
        "llc_max_step": float(np.asarray(steps)[int(np.nanargmax(llc))]),
        "llc_last": float(np.asarray(llc)[-1]),
    }


TIMING_KEYS = ("timings_s",)  # per-part seconds a notebook may report beside ``wall_time_s``


def write_headline(notebook: str, profile: str, results: Mapping[str, Any], wall_time_s: float,
                   directory: Path | None = None) -> Path:
    """Write ``{"notebook", "profile", "wall_time_s", "machine", "artifacts_computed", **results}`` to
    ``<figures_dir(profile)>/<notebook>.json``.

    ``machine`` (:func:`stagewise.hardware.machine_description`) says where ``wall_time_s`` was
    measured: the cores, the CPU and SGLD's dtype, which differ between machines and move the
    estimates' last digits (the same seed and config give the same numbers on the same machine).

    ``artifacts_computed`` counts the artifacts this run wrote to the cache
    (:func:`stagewise.cache.artifacts_written`). A rerun that computed none — every checkpoint and
    estimate loaded from the cache — measured only loading, so it keeps the ``wall_time_s`` (and
    ``timings_s``) of the file it replaces, when that file is of the same profile, and records its
    own seconds as ``cached_rerun_s``, and keeps the ``machine`` those seconds were measured on.
    """
    from stagewise.cache import artifacts_written, atomic_write_text
    from stagewise.hardware import machine_description
    from stagewise.plotting import figures_dir

    if not notebook or any(c in notebook for c in "/\\ ."):
        raise ValueError(f"notebook must be a plain name like '02_regression_stages', got {notebook!r}")
    clash = {"notebook", "profile", "wall_time_s", "machine", "artifacts_computed", "cached_rerun_s"} & set(results)
    if clash:
        raise ValueError(f"results must not set the reserved keys {sorted(clash)}")
    path = Path(directory) if directory is not None else figures_dir(profile)
    path.mkdir(parents=True, exist_ok=True)
    path = path / f"{notebook}.json"
    computed = artifacts_written()
    times: dict[str, Any] = {"wall_time_s": wall_time_s, "machine": machine_description()}
    if computed == 0:
        previous = _read_or_none(path)
        if previous is not None and previous.get("profile") == profile and previous.get("wall_time_s") is not None:
            times = {"wall_time_s": previous["wall_time_s"], "cached_rerun_s": wall_time_s}
            if previous.get("machine"):
                times["machine"] = previous["machine"]
            results = {**results, **{k: previous[k] for k in TIMING_KEYS if k in previous and k in results}}
    record = to_json_value({"notebook": notebook, "profile": profile, **times, "artifacts_computed": computed,
                            **results})
    atomic_write_text(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path


def _read_or_none(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def read_headline(notebook: str, profile: str, directory: Path | None = None) -> dict:
    from stagewise.plotting import figures_dir

    path = (Path(directory) if directory is not None else figures_dir(profile)) / f"{notebook}.json"
    return json.loads(path.read_text())
