"""Benchmark: milliseconds per SGLD chain-step of the `cpu` profiles' LLC sweeps, one thread.

Measures the step the notebooks run, through their own entry points with ``cache=False``: the
language model's LLC (notebook 01, ``language_llc``'s model, loss, data and compute dtype), the
regression transformer's (notebook 02, ``regression_llc``'s) and one layer-0 and one layer-1 head's
wrLLC (notebook 04, ``head_llc_sweep``'s HeadChainLM), each at one mid-training checkpoint of the
profile's cached runs (the runs must be in the cache: run the notebooks, or point STAGEWISE_CACHE
at a cache that has them). Short chains (2 chains x ``--draws`` steps, no burn-in) of the
profile's ε, γ, nβ and batch; the time of a whole call divided by its chain-steps (so the ℓ(w*)
forward of each step and the model's setup are included, as in a sweep).

``--against DIR`` also runs the same measurement with another source tree's ``lib`` (e.g. a
``git worktree`` of an older commit) in alternating rounds, and reports the ratio per setting, so
both sides see the same machine state (timings on a shared VM drift by tens of percent between
minutes: compare within one run only).

    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/bench_sgld_step.py --rounds 3 \\
        --against /tmp/old-tree --out benchmarks/results/sgld_step_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = ("lm", "regression", "head0", "head1")


def measure(setting: str, draws: int) -> dict:
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from stagewise.llc import estimate_llc_sweep

    if setting == "lm":
        from stagewise.profiles.language import PROFILES
        from stagewise.runs import language_analysis_steps, language_run, language_sgld_contexts, language_sgld_model

        p = PROFILES["cpu"]
        run = language_run(p, progress=False, train_missing=False)
        if run is None:
            raise SystemExit("the cpu language run is not in the cache (run notebook 01 at cpu first)")
        steps = language_analysis_steps(p, run)
        step = int(steps[len(steps) // 2])
        model_fn, loss = language_sgld_model(p)
        cfg = dataclasses.replace(p.sgld, num_chains=2, num_burnin=0, num_draws=draws)

        def call():
            return estimate_llc_sweep([(step, run.checkpoint_path(step))], model_fn, loss,
                                      (language_sgld_contexts(p),), cfg, cache=False, compute_dtype=p.sgld_dtype,
                                      chain_mode="loop", progress=False).llc_mean[0]
    elif setting == "regression":
        from functools import partial

        from stagewise.data.regression import regression_sgld_loss, sgld_dataset
        from stagewise.models.regression import RegressionTransformer
        from stagewise.profiles.regression import PROFILES
        from stagewise.runs import regression_run

        p = PROFILES["cpu"]
        run = regression_run(p, 0, progress=False)
        step = int(run.checkpoint_steps[len(run.checkpoint_steps) // 2])
        data = sgld_dataset(p.task, p.num_sgld_samples)
        cfg = dataclasses.replace(p.sgld, num_chains=2, num_burnin=0, num_draws=draws)

        def call():
            return estimate_llc_sweep([(step, run.checkpoint_path(step))], partial(RegressionTransformer, p.model),
                                      regression_sgld_loss(p.sgld_loss), data, cfg, cache=False,
                                      compute_dtype=p.sgld_dtype, progress=False).llc_mean[0]
    else:
        from stagewise.profiles import get_profile
        from stagewise.refined import head_llc_sweep
        from stagewise.runs import rllc_inputs

        cfg_r = get_profile("rllc", "cpu")
        inputs = rllc_inputs(cfg_r, progress=False, train_missing=False)
        if inputs is None:
            raise SystemExit("the cpu language run is not in the cache (run notebook 01 or 04 at cpu first)")
        step, path = inputs.checkpoints[len(inputs.checkpoints) // 2]
        head = "0:6" if setting == "head0" else "1:3"
        cfg = dataclasses.replace(cfg_r.sgld, num_chains=2, num_burnin=0, num_draws=draws)
        dtype = get_profile("language", cfg_r.language).sgld_dtype

        def call():
            frame = head_llc_sweep([(step, path)], inputs.model_fn, inputs.loss, {"train": inputs.data["train"]}, cfg,
                                   heads=[head], cache=False, compute_dtype=dtype, progress=False)
            return float(frame["llc_mean"].iloc[0])

    call()  # warm-up: imports, data, first-call allocations
    t0 = time.perf_counter()
    llc = call()
    seconds = time.perf_counter() - t0
    return {"setting": setting, "step": step, "ms_per_chain_step": 1000 * seconds / (2 * draws), "llc": float(llc)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--draws", type=int, default=20, help="steps per chain (2 chains, no burn-in; default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (default 2)")
    ap.add_argument("--against", default=None, help="another source tree whose lib/ to compare with")
    ap.add_argument("--out", default=None, help="write the rows and medians as JSON here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement, JSON to stdout
    args = ap.parse_args()
    if args.draws < 1 or args.rounds < 1:
        raise SystemExit("--draws and --rounds must be >= 1")
    if args.one:
        print(json.dumps(measure(args.one, args.draws)))
        return
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; allowed: {', '.join(SETTINGS)}")
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "lib"))
    sides = {"this_tree": here}
    if args.against:
        sides["against"] = os.path.join(os.path.abspath(args.against), "lib")
    rows = []
    for r in range(args.rounds):
        for setting in settings:
            for side, lib in sides.items():
                env = {**os.environ, "PYTHONPATH": lib}
                out = subprocess.run([sys.executable, __file__, "--one", setting, "--draws", str(args.draws)],
                                     env=env, capture_output=True, text=True, check=True).stdout
                row = {**json.loads(out.strip().splitlines()[-1]), "side": side, "round": r}
                rows.append(row)
                print(f"round {r} {setting:10s} {side:9s} {row['ms_per_chain_step']:7.1f} ms/chain-step  "
                      f"λ̂ {row['llc']:.4f}", flush=True)
    import numpy as np

    summary = {}
    for setting in settings:
        med = {side: float(np.median([x["ms_per_chain_step"] for x in rows if x["setting"] == setting
                                      and x["side"] == side])) for side in sides}
        summary[setting] = {"median_ms_per_chain_step": med}
        if args.against:
            summary[setting]["against_over_this"] = med["against"] / med["this_tree"]
        print(setting, summary[setting])
    if args.out:
        from stagewise.hardware import machine_description

        def commit(tree: str) -> str | None:
            out = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
            return out.stdout.strip() or None

        with open(args.out, "w") as f:
            json.dump({"written": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
                       "draws": args.draws, "rounds": args.rounds, "this_commit": commit(os.path.dirname(here)),
                       "against": args.against, "against_commit": commit(args.against) if args.against else None,
                       "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
