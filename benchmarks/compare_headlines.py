"""How far the same code, seed and config move between two machines: compare two directories of
headline JSON leaf by leaf and write ``benchmarks/results/cross_machine_<profile>.json``.

Determinism holds per machine: another CPU rounds differently (fp32 kernels of another width, SGLD in
bf16 where the CPU runs it fast, :func:`stagewise.llc.sampler.fast_bf16_support`), so the trained
weights, and every estimate read off them, move in their last digits — and a chaotic training run
further. This says by how much, per notebook: the share of its numbers within 1% and 5%, the
median relative difference, the share identical (settings, integer results), the yes/no findings (booleans) that flip, and the entries present in
one run only (a stage boundary more or fewer, another transient M). Timing keys are left out.

    python benchmarks/compare_headlines.py A_DIR B_DIR --profile cpu --note "..."

``A_DIR`` and ``B_DIR`` hold ``0N_<name>.json``; each record's ``machine`` (or ``--a-machine`` /
``--b-machine`` where an older record has none) names the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"artifacts_computed", "machine"}  # and every key ending in _s (seconds)


def leaves(value, path: str = ""):
    """``(path, value)`` for every scalar of a JSON value; timing keys and strings left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIP and not key.endswith("_s"):
                yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    elif not isinstance(value, str):
        yield path, value


def compare(a: dict, b: dict) -> dict:
    la, lb = dict(leaves(a)), dict(leaves(b))
    rel, flips, same_flags = [], [], 0
    for path in sorted(set(la) & set(lb)):
        x, y = la[path], lb[path]
        if isinstance(x, bool) or isinstance(y, bool):
            if x == y:
                same_flags += 1
            else:
                flips.append(f"{path}: {x} -> {y}")
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if math.isfinite(x) and math.isfinite(y):
                rel.append(0.0 if x == y else abs(x - y) / max(abs(x), abs(y)))
    only = sorted(_first_missing(path, lb if path in la else la) for path in set(la) ^ set(lb))
    return {
        "numbers": len(rel),
        "identical": sum(r == 0.0 for r in rel) / len(rel) if rel else None,
        "within_1pct": sum(r <= 0.01 for r in rel) / len(rel) if rel else None,
        "within_5pct": sum(r <= 0.05 for r in rel) / len(rel) if rel else None,
        "median_rel_diff": statistics.median(rel) if rel else None,
        "flags": same_flags + len(flips),
        "flags_flipped": flips,
        "in_one_run_only": sorted(set(only)),
    }


def _first_missing(path: str, other: dict) -> str:
    """The shortest prefix of ``path`` (at ``.`` or ``[``) under which ``other`` has no leaf: the
    entry one run has and the other lacks (``sgld_calibration.m_11``, ``stages.boundaries[3]``)."""
    cuts = [i for i, c in enumerate(path) if c in ".["] + [len(path)]
    for cut in cuts:
        prefix = path[:cut]
        if not any(p == prefix or p.startswith(prefix + ".") or p.startswith(prefix + "[") for p in other):
            return prefix
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--a-machine")
    parser.add_argument("--b-machine")
    parser.add_argument("--note", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    out = {"profile": args.profile, "note": args.note, "notebooks": {}}
    for side, directory, given in (("a", args.a, args.a_machine), ("b", args.b, args.b_machine)):
        files = sorted(directory.glob("0[0-9]_*.json"))
        if not files:
            raise SystemExit(f"{directory}: no headline JSON (0N_<name>.json)")
        machines = {json.loads(f.read_text()).get("machine") for f in files} - {None}
        if given is None and len(machines) != 1:
            raise SystemExit(f"{directory}: records name machines {sorted(machines)}; give --{side}-machine")
        out[side] = {"dir": str(directory.resolve().relative_to(ROOT)) if directory.resolve().is_relative_to(ROOT)
                     else str(directory), "machine": given or machines.pop()}
    for fa in sorted(args.a.glob("0[0-9]_*.json")):
        fb = args.b / fa.name
        if not fb.exists():
            raise SystemExit(f"{fb} is missing (compare the same notebooks)")
        a, b = json.loads(fa.read_text()), json.loads(fb.read_text())
        if a.get("profile") != args.profile or b.get("profile") != args.profile:
            raise SystemExit(f"{fa.name}: profiles {a.get('profile')!r} / {b.get('profile')!r}, expected {args.profile!r}")
        out["notebooks"][fa.name[:2]] = compare(a, b)
    path = args.out or ROOT / "benchmarks" / "results" / f"cross_machine_{args.profile}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for nb, r in out["notebooks"].items():
        print(f"{nb}: {r['numbers']} numbers, {r['within_1pct']:.0%} within 1%, {r['within_5pct']:.0%} within 5%, "
              f"median {r['median_rel_diff']:.2%}; flags flipped {len(r['flags_flipped'])} of {r['flags']}; "
              f"in one run only: {', '.join(r['in_one_run_only']) or 'nothing'}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
