"""When does the stage detector separate two LLC decreases (LR3 | LR4)? A benchmark, not a test.

Issue #31: on the `long` regression run the LLC falls once, where the paper has two decreasing
stages (LR3 40k–126k, LR4 126k–320k). Whether the detector could see a plateau between two
decreases depends on how far apart and how sharp they are, and on how many checkpoints carry the
curve. Synthetic curves shaped like ours: λ̂(t) = 10 + 140 s((u − ln 3k) / 0.2) − 60 s((u − ln c1) / w)
− 55 s((u − ln c2) / w), u = ln t, s the logistic function, plus Gaussian noise of sd 0.5 (our
`long` run's per-checkpoint spread), sampled at the paper's 190 checkpoints of 500k steps or at the
60 of them the `long` profile used before (``analysis_steps``). ``detect_stages`` runs with the
notebooks' settings (``edge_plateaus=True``), nothing tuned here.

*resolved*: a boundary lies between the two decreases' midpoints with a decreasing stage on each
side. *spurious*: any other boundary after the rise (later than 1.5 × 3k steps) that is not within
a factor 1.5 of the plateau after the rise (√(3k c1)) or of the end of the run: a boundary that
splits the decrease in the wrong place. Boundaries before and at the rise (where the curve starts
to climb) are the LR1 | LR2 kind and are not counted.

    .venv/bin/python benchmarks/stage_detection_resolution.py   # ~3-6 min on one core
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stagewise.stages import detect_stages
from stagewise.train import analysis_steps, checkpoint_schedule

OUT = Path(__file__).resolve().parent / "results" / "stage_detection_resolution.md"
PAIRS = [(50_000, 250_000), (60_000, 220_000), (70_000, 200_000), (80_000, 160_000)]  # the two decreases' midpoints
WIDTHS = [0.1, 0.15, 0.2, 0.3]  # logistic scale in ln t (0.2: the transition's 10-90% span is a factor 2.4)
SEEDS = range(5)
NOISE = 0.5


def curve(steps, c1, c2, width):
    u = np.log(np.maximum(steps, 1.0))
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return 10 + 140 * s((u - np.log(3_000)) / 0.2) - 60 * s((u - np.log(c1)) / width) - 55 * s((u - np.log(c2)) / width)


def run() -> str:
    all_steps = checkpoint_schedule(500_000).astype(float)
    schedules = {190: all_steps, 60: analysis_steps(all_steps.astype(np.int64), 60).astype(float)}
    lines = ["# When does the detector separate two LLC decreases? (issue #31)", "",
             "`benchmarks/stage_detection_resolution.py`: synthetic LLC curves (a rise of 140 at 3k steps, then "
             "decreases of 60 and 55 centred at c1 and c2, logistic in ln t with width w; noise sd 0.5), at the "
             "paper's 190 checkpoints of 500k steps and at 60 of them. `detect_stages(..., edge_plateaus=True)`, the "
             "notebooks' call. Per cell: seeds (of 5) where a boundary separates the two decreases, then the "
             "spurious boundaries summed over seeds; the median boundary between them in brackets.", "",
             "| c1 | c2 | c2/c1 | w | 60 checkpoints: resolved / spurious | 190 checkpoints: resolved / spurious |",
             "|---|---|---|---|---|---|"]
    t_start = time.time()
    for c1, c2 in PAIRS:
        plateaus = [np.sqrt(3_000 * c1), 500_000.0]
        for width in WIDTHS:
            cells = []
            for n, steps in schedules.items():
                keep = steps > 0
                resolved, spurious, found = 0, 0, []
                for seed in SEEDS:
                    values = curve(steps, c1, c2, width) + np.random.default_rng(seed).normal(0, NOISE, len(steps))
                    r = detect_stages(steps[keep], values[keep], edge_plateaus=True, seed=seed)
                    hits = []
                    for i, b in enumerate(r.boundaries):
                        between = c1 < b < c2 and r.stages[i].direction == "decrease" \
                            and r.stages[i + 1].direction == "decrease"
                        if between:
                            hits.append(b)
                        elif b > 1.5 * 3_000 and min(abs(np.log(b / p)) for p in plateaus) > np.log(1.5):
                            spurious += 1
                    resolved += bool(hits)
                    found += hits
                median = f" [{np.median(found) / 1e3:.0f}k]" if found else ""
                cells.append(f"{resolved}/5{median} / {spurious}")
            lines.append(f"| {c1 / 1e3:.0f}k | {c2 / 1e3:.0f}k | {c2 / c1:.1f} | {width} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Run time {time.time() - t_start:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)
    print(f"written to {OUT}")
