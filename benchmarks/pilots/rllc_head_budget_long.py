"""Pilot: what narrows the chain-to-chain spread of layer-1 per-head wrLLCs at `long`?

    python benchmarks/pilots/rllc_head_budget_long.py   # needs the `long` LM (notebook 01 at long)

Notebook 04 at `long` with 2 x (100 + 100) SGLD steps of 4 contexts per head found its layer-1
clusters not reproduced chain by chain, and the calibration's two chains on induction head 1:0
apart by up to 30%. Here, for two induction heads (1:0, 1:4) and two multigram heads (1:2, 1:6) at
the two last checkpoints (after the induction circuit forms), 4 chains of each budget: the profile's
(batch 4, 100 + 100), a 4x batch (16 contexts) and 4x the draws (100 + 400). Reported: each
estimate's mean over the 4 chains and the chains' standard deviation. Every estimate is cached like
the notebook's, so a rerun only rewrites the tables. Measured when first run (2026-12-07, AMD EPYC
Zen 3, fp32, the heads split over two processes, one per core): 21 s per 4-chain estimate at the
profile's budget, 56 s with batch 16, 50 s with 100 + 400. Writes benchmarks/results/pilots/rllc_head_budget_long.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from stagewise.profiles import get_profile
from stagewise.refined import head_llc_sweep
from stagewise.runs import rllc_inputs

OUT = Path(__file__).resolve().parents[1] / "results" / "pilots"
HEADS = ("1:0", "1:4", "1:2", "1:6")
STEPS = (5966, 16000)


def main() -> None:
    cfg = get_profile("rllc", "long")
    lm = get_profile("language", cfg.language)
    inputs = rllc_inputs(cfg, progress=False)
    cks = [c for c in inputs.checkpoints if c[0] in STEPS]
    base = dataclasses.replace(cfg.sgld, num_chains=4)
    variants = {"batch 4, 100 + 100 (profile)": base, "batch 16, 100 + 100": dataclasses.replace(base, batch_size=16),
                "batch 4, 100 + 400": dataclasses.replace(base, num_draws=400)}
    rows = []
    for name, sgld in variants.items():
        for head in HEADS:
            df = head_llc_sweep(cks, inputs.model_fn, inputs.loss, {"train": inputs.data["train"]}, sgld, heads=[head],
                                compute_dtype=lm.sgld_dtype, progress=False)
            for _, r in df.iterrows():
                rows.append({"budget": name, "head": head, "step": int(r["step"]), "llc_mean": float(r["llc_mean"]),
                             "chains_sd": float(r["llc_std"])})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rllc_head_budget_long.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| budget (4 chains) | " + " | ".join(f"{h} @ {s}" for s in STEPS for h in HEADS) + " | mean sd |",
             "|---|" + "---|" * (len(STEPS) * len(HEADS) + 1)]
    for name in variants:
        cells = {(r["head"], r["step"]): r for r in rows if r["budget"] == name}
        sds = [cells[(h, s)]["chains_sd"] for s in STEPS for h in HEADS]
        lines.append(f"| {name} | " + " | ".join(f"{cells[(h, s)]['llc_mean']:.2f} ± {cells[(h, s)]['chains_sd']:.3f}"
                                                for s in STEPS for h in HEADS) + f" | {np.mean(sds):.3f} |")
    (OUT / "rllc_head_budget_long.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
