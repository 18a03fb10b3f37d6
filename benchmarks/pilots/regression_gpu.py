"""Issue #16 on a GPU: the regression transformer at a long schedule (the paper's 500k steps), seed 0,
with the LLC sweep and the Hessian statistics of the `long` profile at that schedule, in one command
that fits a 10-minute GPU lease. Everything goes through the notebooks' cached code path, so the
cache entries it writes serve notebooks 02 and 05 at ``profile=long, num_steps=<steps>`` anywhere.

    STAGEWISE_CACHE=/tmp/swc python benchmarks/pilots/regression_gpu.py check --out $OUT
    STAGEWISE_CACHE=/tmp/swc python benchmarks/pilots/regression_gpu.py train --steps 500000 --out $OUT
    STAGEWISE_CACHE=/tmp/swc python benchmarks/pilots/regression_gpu.py analyse --steps 500000 --out $OUT
    STAGEWISE_CACHE=/tmp/swc python benchmarks/pilots/regression_gpu.py sgld-graph --steps 20000 --out $OUT
    STAGEWISE_CACHE=/tmp/swc python benchmarks/pilots/regression_gpu.py pack --out $OUT
    python benchmarks/pilots/regression_gpu.py compare --steps 500000 --out benchmarks/results/pilots  # here

``check``: 300 steps of the CUDA-graph training path against the eager one on the same device and
seed (max |Δ loss|, steps/s of each). ``train``: the run, ``cuda_graph=True`` (resumable: a killed
run restarts from its last resume state). ``analyse``: the LLC sweep of notebook 02's seed 0 and
notebook 05's Hessian statistics, on the GPU. ``pack``: the cache as ``cache.tgz.part-*`` (≤ 15 MiB
each) under ``--out``; locally ``cat cache.tgz.part-* | tar -xz -C "$STAGEWISE_CACHE"``. ``compare`` (on
the CPU, after unpacking): the eager CPU loop of :func:`stagewise.train.train` replayed for the
first ``--compare-steps`` steps against the GPU run's checkpoints and losses: identical initial
weights, then differences at float-rounding size that grow with training (a wrong learning rate
or optimizer state would differ by a whole update from the first step). Each phase appends its
numbers to ``<out>/gpu_pilot.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import torch

from stagewise.profiles import get_profile


def _profile(steps: int):
    base = get_profile("regression", "long")
    return dataclasses.replace(base, name=f"long-{steps}", train=dataclasses.replace(base.train, num_steps=steps))


def _record(out: Path, **row) -> None:
    path = out / "gpu_pilot.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append(row)
    path.write_text(json.dumps(rows, indent=1))
    print(json.dumps(row), flush=True)


class _Killed(RuntimeError):
    pass


def check(args) -> None:
    """The graphed step against the eager one, same seed, data and device (300 steps, one-cycle):

    * a run started eager, killed at step 150 and resumed with the graph, against the eager run:
      the first graphed step (150 -> 151) starts from identical weights and optimizer state, so its
      difference is float rounding only, measured against the size of that step's update (a wrong
      learning rate or a stale optimizer state would make the ratio O(1));
    * the graph from step 0 against eager over 300 steps (rounding, grown by the training dynamics).
    """
    from stagewise.data.regression import RegressionBatches, regression_loss
    from stagewise.models.regression import RegressionTransformer
    from stagewise.train import train

    prof = _profile(300)
    cfg = dataclasses.replace(prof.train, num_steps=300, resume_every=1, checkpoint_every=1)
    data = RegressionBatches(prof.task, prof.batch_size, 0)
    fit = partial(train, partial(RegressionTransformer, prof.model), regression_loss, config=cfg, progress=False,
                  device="cuda")
    result = {"phase": "check", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    t0 = time.perf_counter()
    eager = fit(data, run_dir=Path("/tmp/check_eager"))
    result["eager_steps_per_s"] = 300 / (time.perf_counter() - t0)

    def dying(step):
        if step == 150:
            raise _Killed
        return data(step)

    try:
        fit(dying, run_dir=Path("/tmp/check_resumed"))
    except _Killed:
        pass
    resumed = fit(data, run_dir=Path("/tmp/check_resumed"), cuda_graph=True)
    t0 = time.perf_counter()
    graphed = fit(data, run_dir=Path("/tmp/check_graph"), cuda_graph=True)
    result["graph_steps_per_s_with_a_checkpoint_every_step"] = 300 / (time.perf_counter() - t0)

    def diff(a, b):
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    e150, e151, r151 = eager.load_state(150), eager.load_state(151), resumed.load_state(151)
    result["resumed_state_150_identical"] = diff(e150, resumed.load_state(150)) == 0.0
    result["step_151_update_max"] = diff(e151, e150)
    result["step_151_graph_vs_eager_max"] = diff(r151, e151)
    result["step_151_ratio"] = result["step_151_graph_vs_eager_max"] / result["step_151_update_max"]
    result["loss_150_graph_vs_eager"] = float(abs(resumed.train_loss[150] - eager.train_loss[150]))
    result["from_scratch_max_abs_loss_diff_first_20"] = float(abs(graphed.train_loss[:20] - eager.train_loss[:20]).max())
    result["from_scratch_max_abs_loss_diff_300"] = float(abs(graphed.train_loss - eager.train_loss).max())
    result["from_scratch_final_weight_diff"] = diff(graphed.load_state(300), eager.load_state(300))
    result["final_loss_eager_graph"] = [float(eager.train_loss[-1]), float(graphed.train_loss[-1])]
    _record(args.out, **result)


def _watch(directory: Path, total: int, stop: threading.Event) -> None:
    t0 = time.perf_counter()
    while not stop.wait(30):
        n = len(list((directory / "checkpoints").glob("step_*.pt")))
        print(f"[{time.perf_counter() - t0:5.0f} s] {n} of {total} checkpoints written", flush=True)


def run_training(args) -> None:
    from stagewise.cache import artifact_dir
    from stagewise.runs import _regression_key, regression_run

    prof = _profile(args.steps)
    directory = artifact_dir("regression_runs", _regression_key(prof, 0))
    stop = threading.Event()
    threading.Thread(target=_watch, args=(directory, len(prof.train.checkpoint_steps()), stop), daemon=True).start()
    t0 = time.perf_counter()
    run = regression_run(prof, 0, progress=False, device="cuda", cuda_graph=True)
    stop.set()
    _record(args.out, phase="train", steps=args.steps, seconds=time.perf_counter() - t0, run_seconds=run.seconds,
            steps_per_s=args.steps / run.seconds, final_smoothed_loss=float(run.smoothed_loss()[-1]),
            run_dir=str(directory))


def analyse(args) -> None:
    from stagewise.runs import regression_hessian, regression_llc

    prof = _profile(args.steps)
    t0 = time.perf_counter()
    sweep = regression_llc(prof.llc_profile(0), 0, progress=False, device="cuda")
    t1 = time.perf_counter()
    _record(args.out, phase="llc", checkpoints=len(sweep.steps), seconds=t1 - t0,
            llc_final=float(sweep.llc_mean[-1]), llc_max=float(max(sweep.llc_mean)))
    curv = regression_hessian(prof, get_profile("hessian", "long"), 0, progress=False, device="cuda")
    _record(args.out, phase="hessian", checkpoints=len(curv), seconds=time.perf_counter() - t1,
            converged=float(curv.converged.mean()))


def sgld_graph(args) -> None:
    """The CUDA-graphed SGLD step against the eager vmapped one through the notebooks' sweep entry
    point, same checkpoints, seed and data: a short run (``--steps``, graph-trained), then (a) the
    `long` profile's LLC setting at 6 analysis checkpoints and (b) the `paper` profile's 10 chains
    at m = 1024 (burn-in and draws cut to 100 + 400) at the last one; seconds per checkpoint of
    each, and the largest |Δλ̂| against the sweep's own standard error."""
    from stagewise.data.regression import sgld_dataset
    from stagewise.llc import estimate_llc_sweep
    from stagewise.models.regression import RegressionTransformer
    from stagewise.runs import regression_run, regression_sgld_loss
    from stagewise.train import analysis_steps

    prof = _profile(args.steps)
    run = regression_run(prof, 0, progress=False, device="cuda", cuda_graph=True)
    steps = analysis_steps(run.checkpoint_steps, 6)
    paper = get_profile("regression", "paper")
    settings = {"long": (prof.sgld, [(int(s), run.checkpoint_path(s)) for s in steps]),
                "paper-10-chains": (dataclasses.replace(paper.sgld, num_burnin=100, num_draws=400),
                                    [(int(steps[-1]), run.checkpoint_path(steps[-1]))])}
    for name, (cfg, cks) in settings.items():
        row = {"phase": "sgld_graph", "setting": name, "checkpoints": [s for s, _ in cks],
               "sgld": f"{cfg.num_chains} chains x ({cfg.num_burnin} + {cfg.num_draws}), m = {cfg.batch_size}"}
        out = {}
        for label, graph in (("eager", False), ("graph", True)):
            t0 = time.perf_counter()
            sweep = estimate_llc_sweep(cks, model_fn=partial(RegressionTransformer, prof.model),
                                       loss=regression_sgld_loss(prof.sgld_loss),
                                       data=sgld_dataset(prof.task, max(prof.num_sgld_samples, 4 * cfg.batch_size)),
                                       config=cfg, compute_dtype=prof.sgld_dtype, cuda_graph=graph, device="cuda",
                                       cache=False, progress=False)
            out[label] = sweep
            row[f"{label}_s_per_checkpoint"] = (time.perf_counter() - t0) / len(cks)
            row[f"{label}_llc"] = [round(float(x), 3) for x in sweep.llc_mean]
        sem = max(float(r.llc_sem) for r in out["eager"].results)
        row["max_abs_llc_diff"] = float(max(abs(a - b) for a, b in zip(out["graph"].llc_mean, out["eager"].llc_mean)))
        row["largest_eager_sem"] = sem
        row["speedup"] = row["eager_s_per_checkpoint"] / row["graph_s_per_checkpoint"]
        _record(args.out, **row)


def compare(args) -> None:
    from stagewise.cache import artifact_dir, load_artifact
    from stagewise.data.regression import RegressionBatches, regression_loss
    from stagewise.models.regression import RegressionTransformer
    from stagewise.runs import _regression_key, regression_run
    from stagewise.train import _make_optimizer

    prof = _profile(args.steps)
    directory = artifact_dir("regression_runs", _regression_key(prof, 0))
    if not (directory / "done.json").exists():
        sys.exit(f"no finished run in {directory}: unpack the GPU pilot's cache there first")
    run = regression_run(prof, 0, progress=False, device="cpu")
    torch.manual_seed(prof.train.seed)
    model = RegressionTransformer(prof.model)
    opt, sched = _make_optimizer(model, prof.train)
    data = RegressionBatches(prof.task, prof.batch_size, 0)

    def state():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def diff(a, b):
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    rows, prev, losses = [], state(), []
    rows.append({"step": 0, "weights_cpu_vs_gpu": diff(prev, run.load_state(0))})
    saved = set(run.checkpoint_steps.tolist())
    for step in range(args.compare_steps):
        loss = regression_loss(model, data(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step + 1 in saved:
            now = state()
            rows.append({"step": step + 1, "weights_cpu_vs_gpu": diff(now, run.load_state(step + 1)),
                         "update_since_previous_checkpoint": diff(now, prev),
                         "loss_cpu_vs_gpu": abs(losses[-1] - float(run.train_loss[step]))})
            prev = now
    for r in rows:
        print("  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    _record(args.out, phase="compare", device="cpu", torch=torch.__version__, rows=rows)


def pack(args) -> None:
    from stagewise.cache import cache_dir

    root = cache_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"tar -C {root} -cz . | split -b 15M - {args.out}/cache.tgz.part-", shell=True, check=True)
    parts = sorted(p.name for p in args.out.glob("cache.tgz.part-*"))
    _record(args.out, phase="pack", parts=parts, bytes=sum((args.out / p).stat().st_size for p in parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["check", "train", "analyse", "sgld-graph", "pack", "compare"])
    parser.add_argument("--compare-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase not in ("pack", "compare") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this pilot is for a GPU (the CPU runs notebook 02 at profile=long instead)")
    {"check": check, "train": run_training, "analyse": analyse, "sgld-graph": sgld_graph, "pack": pack,
     "compare": compare}[args.phase](args)


if __name__ == "__main__":
    main()
