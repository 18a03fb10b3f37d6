"""Pilot: does the LLC's localization strength hide LR3|LR4? The `long` regression run's LLC at
γ̃ = εγ/2 = 0.01 (the paper's text, App. D.2.4; every profile) and at 0.001, the value of the
authors' own LLC-over-time sweep (`timaeus-research/icl`, commit a868647,
`sweeps/analysis/0-L2H4-llcs-over-time.yaml`: `localization_scale: 0.001`, i.e. γ = 6.7, not 66.7).

    python benchmarks/pilots/regression_localization.py                       # the shipped standard run
    python benchmarks/pilots/regression_localization.py --residual paper_code  # needs that run trained

Everything else is the profile's SGLD (ε = 3e-4, nβ = 66.7, 2 chains x (100 + 200) steps, m = 256,
the same data set and seed), at ``--checkpoints`` checkpoints spread evenly in log step over
10k-500k (those the run has written so far, for a run still training). For each γ̃: the LLC curve,
its GP fit and boundaries (`stagewise.stages.detect_stages`), the dips of the GP slope inside the
paper's 40k-320k (`stagewise.stages.slope_dips`; a saddle between LR3 and LR4 is such a dip), and
the estimates flagged (chains) or unconverged. Every estimate is cached. Writes
benchmarks/results/pilots/regression_localization_<profile>[_<residual>].{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stagewise.headline import to_json_value  # noqa: E402
from stagewise.llc import SGLDConfig, estimate_llc_sweep, resolve_compute_dtype  # noqa: E402
from stagewise.models.regression import RegressionTransformer  # noqa: E402
from stagewise.plotting import apply_style, stamp_setting  # noqa: E402
from stagewise.profiles import get_profile  # noqa: E402
from stagewise.runs import regression_run, regression_run_directory, regression_sgld_loss, sgld_dataset  # noqa: E402
from stagewise.stages import detect_stages, slope_dips  # noqa: E402
from stagewise.train import analysis_steps  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "pilots"
PAPER_BOUNDARIES = (1_000, 40_000, 126_000, 320_000)


def _sgld(base: SGLDConfig, gamma_tilde: float) -> SGLDConfig:
    return dataclasses.replace(base, gamma=2 * gamma_tilde / base.epsilon)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="long")
    parser.add_argument("--residual", choices=("standard", "paper_code"), default="standard")
    parser.add_argument("--gamma-tilde", type=float, nargs="+", default=[0.01, 0.001],
                        help="localization strengths γ̃ = εγ/2 to compare (default: 0.01 0.001)")
    parser.add_argument("--checkpoints", type=int, default=24, help="checkpoints over 10k-500k (>= 5)")
    parser.add_argument("--first-step", type=int, default=10_000, help="the first step considered")
    args = parser.parse_args()
    if args.checkpoints < 5:
        parser.error(f"--checkpoints must be >= 5, got {args.checkpoints}")
    if any(not g > 0 for g in args.gamma_tilde):
        parser.error(f"--gamma-tilde must be > 0, got {args.gamma_tilde}")

    base = get_profile("regression", args.profile)
    cfg = base
    if args.residual != base.model.residual:
        cfg = get_profile("regression", args.profile, model=dataclasses.replace(base.model, residual=args.residual),
                          use_shipped_run=False)
    stem = f"regression_localization_{args.profile}" + ("" if args.residual == "standard" else f"_{args.residual}")
    full = cfg.train.checkpoint_steps()
    if cfg is base:
        run = regression_run(cfg, 0, progress=False)
        written = set(int(s) for s in full)
        path_of = run.checkpoint_path
    else:  # a run still training: the checkpoints written so far, read from its run folder
        folder = regression_run_directory(cfg, 0) / "checkpoints"
        written = {int(s) for s in full if (folder / f"step_{int(s):08d}.pt").exists()}

        def path_of(step):
            return folder / f"step_{int(step):08d}.pt"
    candidates = np.array([s for s in full if s >= args.first_step])
    steps = [int(s) for s in analysis_steps(candidates, args.checkpoints) if int(s) in written]
    if len(steps) < 5:
        raise SystemExit(f"only {len(steps)} of the chosen checkpoints are written; need >= 5")
    dtype = resolve_compute_dtype(cfg.sgld_dtype)
    dtype_name = dtype or "float32"  # None: the weights' own dtype
    model_fn = partial(RegressionTransformer, cfg.model)
    loss = regression_sgld_loss(cfg.sgld_loss)
    data = sgld_dataset(cfg.task, cfg.num_sgld_samples)

    record = {"profile": args.profile, "residual": args.residual, "steps": steps, "compute_dtype": dtype_name,
              "sgld": {"epsilon": cfg.sgld.epsilon, "nbeta": cfg.sgld.nbeta, "chains": cfg.sgld.num_chains,
                       "burnin": cfg.sgld.num_burnin, "draws": cfg.sgld.num_draws, "batch_size": cfg.sgld.batch_size,
                       "num_sgld_samples": cfg.num_sgld_samples},
              "paper_boundaries": list(PAPER_BOUNDARIES), "settings": {}}
    previous = {}  # a rerun keeps the compute time of the estimates an earlier run made (now cached)
    if (OUT / f"{stem}.json").exists():
        old = json.loads((OUT / f"{stem}.json").read_text())
        same = old.get("steps") == steps
        if set(old.get("steps", [])) <= set(steps):  # the same checkpoints, or more of a run still training
            previous = {k: (v["seconds"], same) for k, v in old.get("settings", {}).items()}
    apply_style()
    fig, axes = plt.subplots(2, 1, figsize=(7, 5.6), sharex=True)
    for g in args.gamma_tilde:
        sgld = _sgld(cfg.sgld, g)
        t0 = time.perf_counter()
        sweep = estimate_llc_sweep([(s, path_of(s)) for s in steps], model_fn, loss, data, sgld,
                                   compute_dtype=dtype, progress=False)
        seconds = time.perf_counter() - t0
        keep = np.isfinite(sweep.llc_mean)
        res = detect_stages(sweep.steps[keep], sweep.llc_mean[keep], stds=sweep.llc_sem[keep], edge_plateaus=True)
        dips = slope_dips(res, 40_000, min(320_000, max(steps)))
        key = f"gamma_tilde_{g:g}".replace(".", "_")
        if key in previous:  # same checkpoints: the earlier run's time; more: the earlier time + the new ones'
            seconds = max(seconds, previous[key][0]) if previous[key][1] else seconds + previous[key][0]
        record["settings"][key] = {
            "gamma_tilde": g, "gamma": sgld.gamma, "seconds": seconds,
            "llc": [float(v) for v in sweep.llc_mean], "llc_sem": [float(v) for v in sweep.llc_sem],
            "boundaries": [float(b) for b in res.boundaries],
            "directions": [st.direction for st in res.stages],
            "slope_dips": dips,
            "flagged": sorted(int(s) for s in sweep.diagnostics),
            "unconverged": [int(s) for s, r in zip(sweep.steps, sweep.results) if r.unconverged]}
        peak = float(np.nanmax(sweep.llc_mean))
        label = f"γ̃ = {g:g} (γ = {sgld.gamma:.1f})"
        line, = axes[0].plot(sweep.steps[keep], sweep.llc_mean[keep] / peak, ".", ms=4, label=label)
        axes[0].plot(res.steps, res.smoothed / peak, color=line.get_color(), lw=1)
        axes[1].plot(res.steps, res.slope / peak, color=line.get_color(), lw=1, label=label)
        for d in dips:
            axes[1].plot(d["step"], d["slope"] / peak, "v", color=line.get_color(), ms=6)
        print(f"γ̃ = {g:g}: {len(steps)} checkpoints in {seconds:.0f} s, peak {peak:.1f}, boundaries "
              f"{[round(b) for b in res.boundaries]}, slope dips in 40k-320k: "
              + (", ".join(f"{d['step']:,.0f} (relative {d['relative']:.2f})" for d in dips) or "none")
              + f"; unconverged {len(record['settings'][key]['unconverged'])}, flagged {len(sweep.diagnostics)}")
    for ax in axes:
        for b in PAPER_BOUNDARIES:
            ax.axvline(b, color="grey", lw=0.6, ls=":")
    axes[0].set(xscale="log", ylabel="LLC / its peak")
    axes[0].legend(fontsize=8)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set(xlabel="training step", ylabel="GP slope dλ̂/dlog t / peak")
    axes[0].set_title("Regression LLC at two localization strengths; dotted: the paper's boundaries; "
                      "▼: slope dips", fontsize=9)
    stamp_setting(fig, f"{args.profile} profile, seed 0, residual={args.residual}, 2 × (100 + 200) SGLD steps, "
                       f"m = {cfg.sgld.batch_size}")
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / f"{stem}.png", dpi=120, bbox_inches="tight")
    (OUT / f"{stem}.json").write_text(json.dumps(to_json_value(record), indent=1) + "\n")
    lines = [f"# LLC localization pilot: `{args.profile}`, residual={args.residual}\n",
             f"{len(steps)} checkpoints over {steps[0]:,}-{steps[-1]:,}; ε = {cfg.sgld.epsilon:g}, "
             f"nβ = {cfg.sgld.nbeta:.1f}, {cfg.sgld.num_chains} × ({cfg.sgld.num_burnin} + {cfg.sgld.num_draws}) "
             f"steps, m = {cfg.sgld.batch_size}, {dtype_name}. Paper's boundaries: 1k, 40k, 126k, 320k.\n",
             "| γ̃ (γ) | peak λ̂ (step) | last λ̂ | boundaries ≥ 10k | slope dips in 40k–320k (relative) "
             "| unconverged | flagged | compute time |", "|---|---|---|---|---|---|---|---|"]
    for s in record["settings"].values():
        llc = np.array(s["llc"])
        i = int(np.nanargmax(llc))
        dips = ", ".join(f"{d['step']:,.0f} ({d['relative']:.2f})" for d in s["slope_dips"]) or "none"
        lines.append(f"| {s['gamma_tilde']:g} ({s['gamma']:.1f}) | {llc[i]:.1f} ({steps[i]:,}) | {llc[-1]:.1f} | "
                     f"{', '.join(f'{b:,.0f}' for b in s['boundaries']) or 'none'} | {dips} | "
                     f"{len(s['unconverged'])} of {len(steps)} | {len(s['flagged'])} | {s['seconds']:.0f} s |")
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
