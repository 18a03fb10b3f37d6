"""Per-head SGLD budgets of the refined LLC (notebook 04, `cpu`) against a 1,000-draw chain.

    python benchmarks/sgld_calibration_heads.py  # needs the `cpu` LM (trains it if the cache has none, ~21 min)

Notebook 04's calibration reads the profile's estimate against a chain 5x as long (200 draws); for a
single head that reference is itself noisy (per-draw noise about half of λ̂). Here, for a layer-1 and
a layer-0 head at two checkpoints, the wrLLC on the training data of several budgets (chains x
(burn-in + draws)) over one chain of 20 + 1,000 draws (its settled value: the mean of draws 201-1,000;
its standard error from 10-draw blocks). Writes benchmarks/results/sgld_calibration/rllc_heads_cpu.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from stagewise.headline import to_json_value
from stagewise.llc import estimate_llc_sweep, resolve_compute_dtype
from stagewise.llc.diagnostics import draws_from_trace
from stagewise.profiles import get_profile
from stagewise.refined import heads_param_mask, parse_head
from stagewise.runs import language_run, language_sgld_contexts, language_sgld_model

OUT = Path(__file__).parent / "results" / "sgld_calibration"
HEADS = ("1:3", "0:6")  # notebook 04's calibration head (layer 1's largest final wrLLC) and layer 0's largest
STEPS = (171, 4000)
BUDGETS = ((2, 5, 40), (2, 20, 40), (2, 20, 80), (2, 20, 160), (4, 20, 80))  # the first is the profile's
REFERENCE = (20, 1000)


def main():
    cfg = get_profile("rllc", "cpu")
    lm = get_profile("language", cfg.language)
    run = language_run(lm)
    model_fn, loss = language_sgld_model(lm)
    probe = model_fn()
    data = (language_sgld_contexts(lm),)
    rows = []
    t0 = time.perf_counter()
    for head in HEADS:
        names, mask = heads_param_mask(probe, [parse_head(head, lm.model.n_layers, lm.model.n_heads)])
        for step in STEPS:
            def estimate(chains, burnin, draws):
                conf = dataclasses.replace(cfg.sgld, num_chains=chains, num_burnin=burnin, num_draws=draws)
                return estimate_llc_sweep([(step, run.checkpoint_path(step))], model_fn, loss, data, conf,
                                          params_to_sample=names, param_mask=mask,
                                          compute_dtype=resolve_compute_dtype(lm.sgld_dtype), chain_mode="loop",
                                          progress=False).results[0]

            ref = estimate(1, *REFERENCE)
            d = draws_from_trace(ref.llc_trace)[0][200:]
            settled = float(d.mean())
            se = float(d.reshape(-1, 10).mean(axis=1).std(ddof=1) / np.sqrt(len(d) // 10))
            row = {"head": head, "step": step, "reference": settled, "reference_se": se}
            for chains, burnin, draws in BUDGETS:
                r = estimate(chains, burnin, draws)
                row[f"b_{chains}x{burnin}_{draws}"] = float(r.llc_mean / settled)
            rows.append(row)
            print(row, flush=True)
    seconds = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    rec = {"profile_budget": "2x5_40", "budgets": [f"{c}x{b}_{t}" for c, b, t in BUDGETS],
           "reference": {"chains": 1, "burnin": REFERENCE[0], "draws": REFERENCE[1], "settled_from_draw": 201},
           "rows": rows, "seconds": seconds}
    (OUT / "rllc_heads_cpu.json").write_text(json.dumps(to_json_value(rec), indent=1) + "\n")
    header = "| head | step | 1,000-draw λ̂ (± s.e.) | " + " | ".join(f"{c} × ({b} + {t})" for c, b, t in BUDGETS) + " |"
    lines = [f"# Per-head wrLLC budgets, `cpu`, against one chain of {REFERENCE[0]} + {REFERENCE[1]:,} draws\n",
             "Each budget's estimate / the reference's settled value (mean of draws 201-1,000); the first "
             "budget is the profile's.\n", header, "|" + "---|" * (3 + len(BUDGETS))]
    for r in rows:
        lines.append(f"| {r['head']} | {r['step']:,} | {r['reference']:.3f} ± {r['reference_se']:.3f} | "
                     + " | ".join(f"{r[f'b_{c}x{b}_{t}']:.3f}" for c, b, t in BUDGETS) + " |")
    (OUT / "rllc_heads_cpu.md").write_text("\n".join(lines) + f"\n\n({seconds:.0f} s; a rerun finds every chain cached)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
