"""Run the notebooks as plain Python scripts (no Jupyter), e.g. on a GPU machine that has torch but
no Jupyter stack: each Jupytext ``notebooks/NN_*.py`` is executed in a fresh namespace with
``display`` bound to ``print`` and the Agg backend, at the profile in ``$STAGEWISE_PROFILE``.

    STAGEWISE_PROFILE=smoke python benchmarks/pilots/notebooks_as_scripts.py --out $OUT [--only 02 ...]

Writes ``notebooks_as_scripts.json`` under ``--out`` after every notebook: status, seconds, the
device torch saw, the GPU memory high-water mark (0 when nothing ran there), and the headline JSON
the notebook wrote, so the numbers can be set beside a CPU run of the same profile.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", action="append", default=[], help="notebook number(s), e.g. 02")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from stagewise.plotting import figures_dir
    from stagewise.profiles import default_profile

    profile = default_profile()
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    if args.only:
        paths = [p for p in paths if p.name[:2] in args.only]
    rows = []
    for path in paths:
        row = {"notebook": path.stem, "profile": profile,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            code = compile(path.read_text(), str(path), "exec")
            exec(code, {"__name__": "__main__", "display": print})
            row["status"] = "ok"
        except Exception as exc:
            row["status"] = f"error: {type(exc).__name__}: {exc}"[:500]
            row["traceback"] = traceback.format_exc()[-4000:]
            print(row["traceback"], flush=True)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0
        headline = figures_dir(profile) / f"{path.stem}.json"
        if headline.exists():
            row["headline"] = json.loads(headline.read_text())
        rows.append(row)
        print(f"[notebooks_as_scripts] {path.stem}: {row['status']} in {row['seconds']} s", flush=True)
        (args.out / "notebooks_as_scripts.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
