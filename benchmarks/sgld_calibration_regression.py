"""SGLD calibration (App. D.3.3) of the regression `long` profile on its shipped 500k-step run, at
four hand-picked checkpoints of its LLC curve (figures/long/02_regression_stages.json): in LR2's
rise before the 6.3k boundary, at the LLC's peak, before the 300k boundary, and the last.

    python benchmarks/sgld_calibration_regression.py  # ≈ 6 min on one CPU core, every chain cached

Writes benchmarks/results/sgld_calibration/regression_long.{json,md} and the D.6-D.7 figures there.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from stagewise.data.regression import regression_sgld_loss, sgld_dataset
from stagewise.headline import to_json_value
from stagewise.llc import plot_calibration_region, plot_calibration_traces, plot_running_llc, sgld_calibration
from stagewise.models.regression import RegressionTransformer
from stagewise.plotting import save_figure
from stagewise.profiles import get_profile
from stagewise.runs import regression_run
from stagewise.train import analysis_steps

OUT = Path(__file__).parent / "results" / "sgld_calibration"


def main():
    profile = get_profile("regression", "long")
    run = regression_run(profile, 0)
    steps = np.asarray(analysis_steps(run.checkpoint_steps, profile.num_analysis_checkpoints))
    head = json.loads(Path("figures/long/02_regression_stages.json").read_text())["seeds"]["seed_0"]

    def before(x):
        return int(steps[max(np.searchsorted(steps, x) - 1, 0)])

    bounds = [b["step"] for b in head["boundaries"]]
    picks = {"early": before(bounds[1]), "peak": int(head["llc_max_step"]), "boundary": before(bounds[3]),
             "late": int(steps[-1])}
    t0 = time.perf_counter()
    cal = sgld_calibration("regression (long)", picks, {s: run.checkpoint_path(s) for s in picks.values()},
                           partial(RegressionTransformer, profile.model), regression_sgld_loss(profile.sgld_loss),
                           sgld_dataset(profile.task, profile.num_sgld_samples), profile.sgld, profile.sgld_calibration,
                           compute_dtype=profile.sgld_dtype)
    seconds = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("figD6_regression_long_sgld_grid", plot_calibration_traces),
                       ("figD6_regression_long_sgld_region", plot_calibration_region),
                       ("figD7_regression_long_running_llc", plot_running_llc)):
        save_figure(make(cal), name, directory=OUT, formats=("png",))
    rec = cal.to_record()
    rec["seconds"] = seconds  # 0-10 s when every chain is cached (the first run: 1,500 s on a shared core)
    (OUT / "regression_long.json").write_text(json.dumps(to_json_value(rec), indent=1) + "\n")
    table = cal.long_table().drop(columns="profile_chains")
    (OUT / "regression_long.md").write_text(
        f"# SGLD calibration, regression `long` (shipped run)\n\nCompute: 1,500 s on one CPU core shared with "
        f"another job (this run: {seconds:.0f} s, from the cache).\n\n" + table.round(3).to_markdown(index=False)
        + "\n\nusable (good at every checkpoint), rows (nβ, γ), columns ε:\n\n" + cal.usable().to_markdown()
        + f"\n\n{cal.sentence()}\n")
    print(table.round(3).to_string(index=False))
    print(cal.usable())
    print(cal.sentence())


if __name__ == "__main__":
    main()
