"""Record a timed ``make figures`` run as ``benchmarks/results/make_figures_<profile>_timings.json``.

The runner writes ``executed/<profile>/timings.json`` (per notebook: seconds, status, threads; the
helpers it ran). This copies it and adds what the docs print beside it: the machine (CPU, cores,
whether SGLD ran in bf16 there), the seconds the process tree was paused (``--paused``, when other
work had to run on the cores mid-run), the running time, the wall time of a rerun with the cache
full (``--cached-rerun``, a second ``timings.json``), the install that ``make figures`` ran first in a
fresh clone (``--install-seconds``), and a note. The README's ``make figures`` row
and the profiles page read the result (``docs/generate.py``).

    python benchmarks/record_make_figures.py --profile cpu --note "..." \\
        [--timings executed/cpu/timings.json] [--cached-rerun /tmp/rerun/timings.json] [--paused 0] \\
        [--install-seconds S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stagewise.hardware import machine_description

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--timings", type=Path, help="the run's timings.json (default executed/<profile>/timings.json)")
    parser.add_argument("--cached-rerun", type=Path, help="timings.json of a rerun with the cache full")
    parser.add_argument("--paused", type=float, default=0.0, help="seconds the process tree was stopped mid-run")
    parser.add_argument("--install-seconds", type=float,
                        help="seconds `make figures` spent installing the venv before the runner started (fresh clone)")
    parser.add_argument("--machine", help="override the machine description (default: read from this machine)")
    parser.add_argument("--note", required=True, help="what else ran, which commit, anything a reader needs")
    parser.add_argument("--failed-at-end", action="append", default=[], metavar="NB",
                        help="a notebook that failed in its last cell, after all its work (say why in --note)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    timings = args.timings or ROOT / "executed" / args.profile / "timings.json"
    record = json.loads(timings.read_text())
    if record.get("profile") != args.profile:
        raise SystemExit(f"{timings} is of profile {record.get('profile')!r}, not {args.profile!r}")
    failed = [n["notebook"] for n in record["notebooks"] if n["status"] != "ok"]
    unexplained = sorted(set(failed) - set(args.failed_at_end))
    if unexplained:
        raise SystemExit(f"{timings}: notebooks {unexplained} did not finish; a failed run is no timing "
                         "(--failed-at-end NB only for one that failed after its work, with the why in --note)")
    if not 0 <= args.paused < record["wall_seconds"]:
        raise SystemExit(f"--paused must be in [0, {record['wall_seconds']:.0f}) s, got {args.paused}")
    if args.install_seconds is not None and not 0 <= args.install_seconds < 3600:
        raise SystemExit(f"--install-seconds must be in [0, 3600) s, got {args.install_seconds}")
    record["machine"] = args.machine or machine_description("cpu")
    record["paused_seconds"] = args.paused
    record["wall_seconds_running"] = record["wall_seconds"] - args.paused
    if args.install_seconds is not None:
        record["install_seconds"] = args.install_seconds
    if args.cached_rerun:
        rerun = json.loads(args.cached_rerun.read_text())
        record["cached_rerun_wall_seconds"] = rerun["wall_seconds"]
    record["note"] = args.note
    out = args.out or ROOT / "benchmarks" / "results" / f"make_figures_{args.profile}_timings.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}: {record['wall_seconds_running'] / 3600:.2f} h running on {record['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
