"""Benchmark: a per-head refined-LLC estimate through HeadChainLM against the whole plain-torch twin.

    python benchmarks/bench_head_chains.py            # the `cpu` LM's checkpoints (trains it if not cached, ~21 min)
    python benchmarks/bench_head_chains.py --repeats 3

Notebook 04 estimates every head's wrLLC / wdrLLC at every checkpoint; each chain moves one head.
``stagewise.refined.head_llc_sweep`` runs those chains through
:class:`stagewise.models.language_fast.HeadChainLM` (the prefix upstream of the head computed once per
batch, no backward pass through it) instead of the whole :class:`FastAttentionOnlyLM`. Here both run
the `cpu` rllc profile's SGLD budget on the training data (``estimate_llc_sweep``, ``cache=False``, the
call notebook 04 makes) for a layer-0 and a layer-1 head at the first and last analysed checkpoint,
interleaved (whole, chains, whole, chains, ...) so that background load hits both alike. Reports
seconds per estimate, the ratio whole / chains measured in this run, and the two λ̂ (the same estimate
to float rounding). Appends to benchmarks/results/head_chains.md and writes head_chains_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
from machine_info import cpu_name  # noqa: E402  (benchmarks/)

from stagewise.llc import estimate_llc_sweep, resolve_compute_dtype
from stagewise.profiles import get_profile
from stagewise.refined import head_chain_model_fn, heads_param_mask, parse_head
from stagewise.runs import language_analysis_steps, language_run, language_sgld_contexts, language_sgld_model

OUT = Path(__file__).parent / "results"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="rllc profile (default cpu)")
    ap.add_argument("--heads", default="0:6,1:3", help="comma-separated heads (default 0:6,1:3)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of (whole, chains) per head and checkpoint")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    cfg = get_profile("rllc", args.profile)
    lm = get_profile("language", cfg.language)
    run = language_run(lm)
    steps = language_analysis_steps(lm, run)
    steps = [int(steps[0]), int(steps[-1])]
    model_fn, loss = language_sgld_model(lm)
    probe = model_fn()
    data = (language_sgld_contexts(lm),)
    dtype = resolve_compute_dtype(lm.sgld_dtype)
    rows = []
    for head in args.heads.split(","):
        parsed = [parse_head(head, lm.model.n_layers, lm.model.n_heads)]
        names, mask = heads_param_mask(probe, parsed)
        fns = {"whole": model_fn, "chains": head_chain_model_fn(model_fn, parsed, probe)}
        for step in steps:
            got = {k: [] for k in fns}
            llc = {}
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    r = estimate_llc_sweep([(step, run.checkpoint_path(step))], fn, loss, data, cfg.sgld,
                                           params_to_sample=names, param_mask=mask, compute_dtype=dtype,
                                           chain_mode="loop", cache=False, progress=False).results[0]
                    got[name].append(time.perf_counter() - t0)
                    llc[name] = r.llc_mean
            row = {"head": head, "step": step, "whole_s": float(np.median(got["whole"])),
                   "chains_s": float(np.median(got["chains"])), "llc_whole": llc["whole"], "llc_chains": llc["chains"]}
            row["ratio"] = row["whole_s"] / row["chains_s"]
            rows.append(row)
            print(row, flush=True)
    total = sum(r["whole_s"] for r in rows) / sum(r["chains_s"] for r in rows)
    c = cfg.sgld
    now = datetime.datetime.now()
    lines = [f"\n### {args.profile} rllc, {cpu_name()}, one thread, {now:%Y-%m-%d %H:%M}",
             f"{c.num_chains} chains x ({c.num_burnin} burn-in + {c.num_draws} draws) of {c.batch_size} contexts, "
             f"ε = {c.epsilon:g}, γ = {c.gamma:g}, nβ = {c.nbeta:g}, compute dtype {dtype or 'float32'}; "
             f"median of {args.repeats} interleaved rounds\n",
             "| head | step | whole twin (s) | HeadChainLM (s) | whole / chains | λ̂ whole | λ̂ chains |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['head']} | {r['step']:,} | {r['whole_s']:.2f} | {r['chains_s']:.2f} | {r['ratio']:.2f} | "
              f"{r['llc_whole']:.4f} | {r['llc_chains']:.4f} |" for r in rows]
    lines.append(f"\nAll rows: {total:.2f}x less time per estimate through HeadChainLM (sum of whole / sum of chains).")
    with open(OUT / "head_chains.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    (OUT / f"head_chains_{now:%Y%m%d}.json").write_text(json.dumps({"profile": args.profile, "cpu": cpu_name(),
                                                                    "rows": rows, "ratio_all": total}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
