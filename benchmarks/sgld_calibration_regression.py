"""SGLD calibration (App. D.3.3) of a regression profile's SGLD setting on its seed-0 run, at four
checkpoints read off the profile's headline JSON (notebook 02's LLC curve and boundaries): in the
rise (`long`: before the 6.3k boundary; `cpu`: nearest a quarter of the peak's step), at the LLC's
peak, before the last boundary, and the last checkpoint. Without the full LLC sweep.

    python benchmarks/sgld_calibration_regression.py [long|cpu]  # every chain cached

`long` loads the shipped 500k-step run; `cpu` needs its 10k-step run in the cache (notebook 02).
Writes benchmarks/results/sgld_calibration/regression_<profile>.{json,md} and the D.6-D.7 figures.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from stagewise.data.regression import regression_sgld_loss, sgld_dataset
from stagewise.headline import to_json_value
from stagewise.llc import save_calibration_figures, sgld_calibration
from stagewise.models.regression import RegressionTransformer
from stagewise.profiles import get_profile
from stagewise.runs import regression_run
from stagewise.train import analysis_steps

OUT = Path(__file__).parent / "results" / "sgld_calibration"
# the first (uncached) run's cost, as measured
FIRST_RUN_S = {"long": "1,500 s on one CPU core shared with another job", "cpu": "1,268 s on one CPU core shared with another job (after training the run: 10k steps, ~12 min)"}


def main(name: str = "long"):
    profile = get_profile("regression", name)
    run = regression_run(profile, 0)
    steps = np.asarray(analysis_steps(run.checkpoint_steps, profile.num_analysis_checkpoints))
    folder = Path("figures") if name == "cpu" else Path("figures") / name
    head = json.loads((folder / "02_regression_stages.json").read_text())["seeds"]["seed_0"]

    def before(x):
        return int(steps[max(np.searchsorted(steps, x) - 1, 0)])

    bounds = [b["step"] for b in head["boundaries"]]
    peak = int(head["llc_max_step"])
    early = before(bounds[1]) if name == "long" else int(steps[np.argmin(np.abs(steps - peak / 4))])
    picks = {"early": early, "peak": peak, "boundary": before(bounds[-1]), "late": int(steps[-1])}
    t0 = time.perf_counter()
    cal = sgld_calibration(f"regression ({name})", picks, {s: run.checkpoint_path(s) for s in picks.values()},
                           partial(RegressionTransformer, profile.model), regression_sgld_loss(profile.sgld_loss),
                           sgld_dataset(profile.task, profile.num_sgld_samples), profile.sgld, profile.sgld_calibration,
                           compute_dtype=profile.sgld_dtype)
    seconds = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    save_calibration_figures(cal, f"regression_{name}", directory=OUT, formats=("png",))
    rec = cal.to_record()
    rec["seconds"] = seconds  # 0-10 s when every chain is cached
    (OUT / f"regression_{name}.json").write_text(json.dumps(to_json_value(rec), indent=1) + "\n")
    table = cal.long_table().drop(columns="profile_chains")
    (OUT / f"regression_{name}.md").write_text(
        f"# SGLD calibration, regression `{name}`, seed 0\n\nCompute: {FIRST_RUN_S[name]} (this run: {seconds:.0f} s"
        ", 0-10 s when every chain is cached).\n\n" + table.round(3).to_markdown(index=False)
        + "\n\nusable (good at every checkpoint), rows (nβ, γ), columns ε:\n\n" + cal.usable().to_markdown()
        + f"\n\n{cal.sentence()}\n")
    print(table.round(3).to_string(index=False))
    print(cal.usable())
    print(cal.sentence())


if __name__ == "__main__":
    main(*sys.argv[1:2])
