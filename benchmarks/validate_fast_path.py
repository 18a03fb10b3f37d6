"""Does the LLC fast path change the science? (issue #17)

Runs the LLC sweep of one curve twice — with the profile's fast path (what the notebooks use) and
with the exact reference path (fp32, the full forward: ``sgld_loss="full"`` for the regression
transformer, the TransformerLens model for the language model) — at the same SGLD seed, and checks

* every checkpoint: |λ̂_fast − λ̂_exact| ≤ 2 combined standard errors (``stagewise.llc.compare_sweeps``);
* the stages: each detected boundary of one curve lies in the other's boundary interval.

    python benchmarks/validate_fast_path.py --setting regression --profile long
    python benchmarks/validate_fast_path.py --setting language --profile cpu

Both sweeps are cached like any sweep (the fast one is usually there already from the notebook).
Writes benchmarks/results/fast_path_<setting>_<profile>.png/.json and appends to fast_path.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stagewise.headline import to_json_value  # noqa: E402
from stagewise.llc import compare_sweeps, resolve_compute_dtype  # noqa: E402
from stagewise.plotting import apply_style  # noqa: E402
from stagewise.profiles import get_profile  # noqa: E402
from stagewise.stages import detect_stages  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def sweeps(setting: str, profile: str, seed: int | None):
    from stagewise import runs

    if setting == "regression":
        fast = get_profile("regression", profile)
        seed = fast.llc_seeds[0] if seed is None else seed
        exact = dataclasses.replace(fast, sgld_loss="full", sgld_dtype="float32")
        describe = (f"fast: loss {fast.sgld_loss}, dtype {fast.sgld_dtype} -> "
                    f"{resolve_compute_dtype(fast.sgld_dtype) or 'float32'}; exact: loss full, float32")
        return (lambda: runs.regression_llc(fast, seed)), (lambda: runs.regression_llc(exact, seed)), describe, seed
    fast = get_profile("language", profile)
    exact = dataclasses.replace(fast, sgld_model="transformer_lens", sgld_dtype="float32")
    describe = (f"fast: model {fast.sgld_model}, stride {fast.sgld_stride}, dtype {fast.sgld_dtype} -> "
                f"{resolve_compute_dtype(fast.sgld_dtype) or 'float32'}; exact: TransformerLens model, same stride, float32")
    return (lambda: runs.language_llc(fast)), (lambda: runs.language_llc(exact)), describe, fast.train.seed


def stages_of(sweep):
    keep = (sweep.steps > 0) & np.isfinite(sweep.llc_mean)
    return detect_stages(sweep.steps[keep], sweep.llc_mean[keep], stds=sweep.llc_sem[keep], edge_plateaus=True)


def boundaries_agree(a, b) -> bool:
    """Same number of boundaries, each inside the other curve's interval for its counterpart."""
    if len(a.boundaries) != len(b.boundaries):
        return False
    return all(lo_b <= x_a <= hi_b and lo_a <= x_b <= hi_a
               for x_a, (lo_a, hi_a), x_b, (lo_b, hi_b) in zip(a.boundaries, a.intervals, b.boundaries, b.intervals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=["regression", "language"], required=True)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_fast, run_exact, describe, seed = sweeps(args.setting, args.profile, args.seed)
    t0 = time.perf_counter()
    fast = run_fast()
    t1 = time.perf_counter()
    exact = run_exact()
    t2 = time.perf_counter()
    table, summary = compare_sweeps(fast, exact)
    st_fast, st_exact = stages_of(fast), stages_of(exact)
    same_stages = boundaries_agree(st_fast, st_exact)
    el_fast = float(np.nansum([r.elapsed_s for r in fast.results]))
    el_exact = float(np.nansum([r.elapsed_s for r in exact.results]))

    apply_style()
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 5.4), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for sweep, st, label, color in ((exact, st_exact, "exact (fp32, reference path)", "k"),
                                    (fast, st_fast, "fast path (the notebooks')", "tab:red")):
        keep = sweep.steps > 0
        axes[0].errorbar(sweep.steps[keep], sweep.llc_mean[keep], yerr=2 * sweep.llc_sem[keep], fmt="o-", ms=2.5,
                         lw=0.8, capsize=1.5, color=color, label=f"{label}; boundaries "
                         + ", ".join(f"{b:,.0f}" for b in st.boundaries))
        for b in st.boundaries:
            axes[0].axvline(b, color=color, ls="--", lw=0.7)
    axes[0].set(xscale="log", ylabel=r"LLC $\hat\lambda(w_t)$ (± 2 s.e.)",
                title=f"{args.setting}, {args.profile} profile: fast path vs exact, same SGLD seed")
    axes[0].legend(fontsize=7)
    t = table[table.step > 0]
    axes[1].plot(t.step, t.z, "o-", ms=2.5, color="tab:blue")
    axes[1].axhspan(-2, 2, color="0.9", label="±2 combined s.e.")
    axes[1].set(xscale="log", xlabel="training step $t$", ylabel="z = Δλ̂ / s.e.",
                title=f"{summary['within']} of {summary['comparable']} checkpoints within 2 s.e.; stages "
                      + ("agree" if same_stages else "differ"))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    stem = f"fast_path_{args.setting}_{args.profile}"
    fig.savefig(RESULTS / f"{stem}.png", dpi=130)
    record = {"setting": args.setting, "profile": args.profile, "seed": seed, "paths": describe, **summary,
              "boundaries_fast": st_fast.boundaries, "boundaries_exact": st_exact.boundaries,
              "intervals_fast": st_fast.intervals, "intervals_exact": st_exact.intervals,
              "stages_agree": same_stages, "sgld_seconds_fast": el_fast, "sgld_seconds_exact": el_exact,
              "wall_seconds_fast_sweep": t1 - t0, "wall_seconds_exact_sweep": t2 - t1,
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "written": time.strftime("%Y-%m-%d %H:%M")}
    (RESULTS / f"{stem}.json").write_text(json.dumps(to_json_value(record), indent=1) + "\n")
    with open(RESULTS / "fast_path.md", "a") as fh:
        fh.write(f"\n### {args.setting}, `{args.profile}` profile, seed {seed} ({record['written']})\n\n{describe}.\n\n"
                 f"- checkpoints within 2 combined s.e.: **{summary['within']} of {summary['comparable']}** "
                 f"(max |z| {summary['max_abs_z']:.2f}; mean Δλ̂ {summary['mean_difference']:+.2f})\n"
                 f"- boundaries fast: {', '.join(f'{b:,.0f}' for b in st_fast.boundaries)}; exact: "
                 f"{', '.join(f'{b:,.0f}' for b in st_exact.boundaries)} -> {'agree' if same_stages else 'differ'} "
                 f"(each inside the other's interval)\n"
                 f"- SGLD time summed over checkpoints (as cached): fast {el_fast:,.0f} s, exact {el_exact:,.0f} s "
                 f"(ratio {el_exact / el_fast:.2f}; measured in different runs on a shared machine: a rough guide)\n\n"
                 f"![{stem}]({stem}.png)\n")
    print(json.dumps(to_json_value({k: v for k, v in record.items() if "intervals" not in k}), indent=1))


if __name__ == "__main__":
    main()
