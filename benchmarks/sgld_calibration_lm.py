"""SGLD calibration (App. D.3.3) of the LM `cpu` profile at the three checkpoints of issue 35's
table (306, 1,288, 4,000 steps; the nearest checkpoints), without the full LLC sweep.

    python benchmarks/sgld_calibration_lm.py  # trains the `cpu` LM first if the cache has none (~21 min)
    python benchmarks/sgld_calibration_lm.py --burnin 0  # the profile's former budget (no burn-in)
    python benchmarks/sgld_calibration_lm.py --layers 1  # the one-layer model (App. B.5) at 100 / 300 / 1,000

Writes benchmarks/results/sgld_calibration/lm_cpu.{json,md} and the D.6-D.7 figures there, or
lm_cpu_burnin<N>.* with another burn-in than the profile's (lm1_cpu* for the one-layer model). The .md adds the long chain's draws in
blocks of 40 (block mean / settled value): where the chain is still leaving w*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from stagewise.headline import to_json_value
from stagewise.llc.diagnostics import draws_from_trace
from stagewise.llc import save_calibration_figures, sgld_calibration
from stagewise.profiles import get_profile
from stagewise.runs import language_run, language_sgld_contexts, language_sgld_model

OUT = Path(__file__).parent / "results" / "sgld_calibration"
# compute of the first (uncached) run per burn-in; a rerun finds every chain in the cache
FIRST_RUN_S = {("lm", 0): "358 s (2 threads)", ("lm", 40): "742 s (one core; the other core training)",
               ("lm1", 0): "354 s (one core), after training the one-layer model"}
BLOCK = 40


def block_table(cal):
    """The long chain's draws d_t in blocks of ``BLOCK``: block mean / settled value, per checkpoint."""
    import pandas as pd

    rows = {}
    settled_at = cal.long_table().set_index("step")["long_settled"]
    for label, step in cal.checkpoints.items():
        d = draws_from_trace(cal.long[step].llc_trace)[0]
        settled = settled_at[step]
        rows[f"{label} ({step})"] = {f"{i + 1}-{i + BLOCK}": d[i:i + BLOCK].mean() / settled
                                     for i in range(0, len(d) - BLOCK + 1, BLOCK)}
    return pd.DataFrame(rows).T


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burnin", type=int, default=None, help="SGLD burn-in steps (default: the profile's)")
    parser.add_argument("--layers", type=int, default=2, choices=(1, 2), help="the two-layer model or the one-layer one")
    args = parser.parse_args()
    profile = get_profile("language", "cpu")
    name, targets = "lm", (("early", 306), ("middle", 1288), ("late", 4000))
    if args.layers == 1:
        profile = profile.one_layer()
        name, targets = "lm1", (("early", 100), ("middle", 300), ("late", 1000))
    if args.burnin is not None and args.burnin != profile.sgld.num_burnin:
        if args.burnin < 0:
            parser.error(f"--burnin must be >= 0, got {args.burnin}")
        profile = dataclasses.replace(profile, sgld=dataclasses.replace(profile.sgld, num_burnin=args.burnin))
        tag = f"{name}_cpu_burnin{args.burnin}"
    else:
        tag = f"{name}_cpu"
    burnin = profile.sgld.num_burnin
    run = language_run(profile)
    steps = np.asarray(run.checkpoint_steps)
    picks = {label: int(steps[np.argmin(np.abs(steps - s))]) for label, s in targets}
    model_fn, loss = language_sgld_model(profile)
    t0 = time.perf_counter()
    setting = "LM (cpu)" if args.layers == 2 else "one-layer LM (cpu)"
    cal = sgld_calibration(setting, picks, {s: run.checkpoint_path(s) for s in picks.values()}, model_fn, loss,
                           (language_sgld_contexts(profile),), profile.sgld, profile.sgld_calibration,
                           compute_dtype=profile.sgld_dtype, chain_mode="loop")
    seconds = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    save_calibration_figures(cal, tag, directory=OUT, formats=("png",))
    rec = cal.to_record()
    rec["seconds"] = seconds  # a few seconds when every chain is cached
    blocks = block_table(cal)
    rec["long_chain_blocks"] = {label: [float(x) for x in row] for label, row in zip(cal.checkpoints, blocks.to_numpy())}
    rec["long_chain_block_draws"] = BLOCK
    (OUT / f"{tag}.json").write_text(json.dumps(to_json_value(rec), indent=1) + "\n")
    table = cal.long_table().drop(columns="profile_chains")
    first = FIRST_RUN_S.get((name, burnin), "not recorded")
    (OUT / f"{tag}.md").write_text(
        f"# SGLD calibration, {'LM' if args.layers == 2 else 'one-layer LM'} `cpu`, burn-in {burnin}\n\nCompute: {first} (this run: {seconds:.0f} s)\n\n"
        + table.round(3).to_markdown(index=False)
        + "\n\nusable (good at every checkpoint), rows (nβ, γ), columns ε:\n\n" + cal.usable().to_markdown()
        + f"\n\nthe long chain's draws in blocks of {BLOCK}, block mean / settled value:\n\n"
        + blocks.round(3).to_markdown() + f"\n\n{cal.sentence()}\n")
    print(table.round(3).to_string(index=False))
    print(cal.usable())
    print(cal.sentence())


if __name__ == "__main__":
    main()
