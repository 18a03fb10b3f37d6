"""SGLD calibration (App. D.3.3) of the LM `cpu` profile at the three checkpoints of issue 35's
table (306, 1,288, 4,000 steps; the nearest checkpoints), without the full LLC sweep.

    python benchmarks/sgld_calibration_lm.py  # trains the `cpu` LM first if the cache has none (~21 min)

Writes benchmarks/results/sgld_calibration/lm_cpu.{json,md} and the D.6-D.7 figures there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from stagewise.headline import to_json_value
from stagewise.llc import plot_calibration_region, plot_calibration_traces, plot_running_llc, sgld_calibration
from stagewise.plotting import save_figure
from stagewise.profiles import get_profile
from stagewise.runs import language_run, language_sgld_contexts, language_sgld_model

OUT = Path(__file__).parent / "results" / "sgld_calibration"


def main():
    profile = get_profile("language", "cpu")
    run = language_run(profile)
    steps = np.asarray(run.checkpoint_steps)
    picks = {label: int(steps[np.argmin(np.abs(steps - s))]) for label, s in
             (("early", 306), ("middle", 1288), ("late", 4000))}
    model_fn, loss = language_sgld_model(profile)
    t0 = time.perf_counter()
    cal = sgld_calibration("LM (cpu)", picks, {s: run.checkpoint_path(s) for s in picks.values()}, model_fn, loss,
                           (language_sgld_contexts(profile),), profile.sgld, profile.sgld_calibration,
                           compute_dtype=profile.sgld_dtype, chain_mode="loop")
    seconds = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("figD6_lm_cpu_sgld_grid", plot_calibration_traces),
                       ("figD6_lm_cpu_sgld_region", plot_calibration_region),
                       ("figD7_lm_cpu_running_llc", plot_running_llc)):
        save_figure(make(cal), name, directory=OUT, formats=("png",))
    rec = cal.to_record()
    rec["seconds"] = seconds
    (OUT / "lm_cpu.json").write_text(json.dumps(to_json_value(rec), indent=1) + "\n")
    table = cal.long_table().drop(columns="profile_chains")
    (OUT / "lm_cpu.md").write_text(
        f"# SGLD calibration, LM `cpu`, {seconds:.0f} s\n\n" + table.round(3).to_markdown(index=False)
        + "\n\nusable (good at every checkpoint), rows (nβ, γ), columns ε:\n\n" + cal.usable().to_markdown()
        + f"\n\n{cal.sentence()}\n")
    print(table.round(3).to_string(index=False))
    print(cal.usable())
    print(cal.sentence())


if __name__ == "__main__":
    main()
