"""Benchmark: SGLD LLC estimation, stagewise.llc against devinterp 1.3.2 (issue 4).

    .venv/bin/python benchmarks/bench_llc.py --device cpu            # the regression row
    .venv/bin/python benchmarks/bench_llc.py --device cuda
    .venv/bin/python benchmarks/bench_llc.py --draws 100 --burnin 20  # quick
    .venv/bin/python benchmarks/bench_llc.py --contestants devinterp,loop,loop+bf16,loop+bf16+fast
    .venv/bin/python benchmarks/bench_llc.py --model lm --chains 2 --burnin 0 --draws 20  # the LM row

LM row: the paper's 2-layer attention-only LM (3.36M params, TransformerLens) at the last checkpoint
of the cached ``cpu``-profile language run (a fresh initialisation if that run is not in the cache;
the table says which), batch 16 × context 256 of the held-out SGLD split, every position in the
loss, ε = 1e-3, γ = 100, nβ = 100 / log 100 (the paper's LM setting, D.1.4).

Contestants: ``devinterp``, or ``<chain mode>[+compile][+bf16][+fast]`` for ours: chain mode loop or
vmap; ``compile`` = torch.compile of the loss; ``bf16`` = ``compute_dtype="bfloat16"`` (the loss's
forward + backward under bf16 autocast, chains in fp32); ``fast`` = the loss through
``RegressionTransformer.forward(tokens, predictions_only=True)`` (last block at x positions only).

Setting (issue 4): the paper's 51,717-parameter regression transformer at a trained checkpoint
(Adam, a few thousand steps, inline), 4 chains x (100 burn-in + 500 draws), batch m = 1024,
ε = 3e-4, γ = 100, nβ = m / log m, on a fixed SGLD data set. Contestants run interleaved in one
process (the machine is shared, so ratios within one run are what count). devinterp uses its own
estimator (ℓ(w*) averaged over C batches); ours pairs ℓ(w*) with each draw's batch.
"cpu use" = process CPU time / (wall time × threads); "others" = CPU time other processes used meanwhile,
in cores (/proc/stat): ~0 means the contestant had the machine to itself.
Results are appended to benchmarks/results/llc_benchmark.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from stagewise.data.regression import RegressionTask, regression_loss, sample_batch
from stagewise.llc import SGLDConfig, estimate_llc_module
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig, count_parameters

RESULTS = Path(__file__).resolve().parent / "results"


def train_checkpoint(steps: int, device: str, seed: int = 0) -> RegressionTransformer:
    torch.manual_seed(seed)
    model = RegressionTransformer(RegressionTransformerConfig()).to(device)
    assert count_parameters(model) == 51_717
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    task = RegressionTask()
    t0 = time.perf_counter()
    for step in range(steps):
        b = sample_batch(task, 256, gen)
        loss = regression_loss(model, (b.tokens.to(device), b.ys.to(device)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f}s, final batch loss {loss.item():.4f}")
    return model.eval()


def sgld_data(n: int, device: str):
    b = sample_batch(RegressionTask(), n, torch.Generator().manual_seed(12345))
    return b.tokens.to(device), b.ys.to(device)


def fast_loss(forward, batch):
    """regression_loss through the predictions-only forward (same value up to float rounding)."""
    tokens, ys = batch[0], batch[1]
    return ((forward(tokens, predictions_only=True) - ys) ** 2).mean()


def step_flops(model, data, batch_size: int, loss=regression_loss) -> float:
    """FLOPs of one SGLD step's forward + backward (FlopCounterMode: matmuls only)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = tuple(column[:batch_size] for column in data)
    with FlopCounterMode(display=False) as counter:
        loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def lm_setup(device: str, batch_size: int):
    """The cpu-profile LM's last cached checkpoint (or a fresh init) and its SGLD contexts."""
    from stagewise.cache import cache_dir, config_hash
    from stagewise.data.language import _tokenizer_hash, load_contexts
    from stagewise.models.language import make_language_model
    from stagewise.profiles.language import PROFILES
    from stagewise.runs import LanguageRunKey
    from stagewise.train import TrainedRun

    profile = PROFILES["cpu"]
    key = LanguageRunKey(profile.model, profile.train, profile.batch_size, profile.data_seed, profile.corpus,
                         _tokenizer_hash())
    directory = cache_dir() / "language_runs" / config_hash(key)
    if (directory / "done.json").exists():
        run = TrainedRun(directory, partial(make_language_model, profile.model))
        step = int(run.checkpoint_steps[-1])
        model, where = run.load_model(step), f"cpu-profile run, step {step}"
    else:
        torch.manual_seed(0)
        model, where = make_language_model(profile.model), "fresh initialisation (no cached cpu-profile run)"
    model = model.to(device).eval()
    contexts = load_contexts(profile.corpus, "sgld", profile.model.n_ctx).long()
    if len(contexts) < batch_size:
        raise ValueError(f"the SGLD split has {len(contexts)} contexts, fewer than the batch size {batch_size}")
    return model, (contexts.to(device),), where


def _devinterp_evaluate(model, batch):
    return regression_loss(model, batch), {}


def _devinterp_evaluate_lm(model, batch):
    from stagewise.models.language import lm_loss

    return lm_loss(model, batch), {}


def run_devinterp(model, data, cfg: SGLDConfig, device: str, evaluate=_devinterp_evaluate):
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*data), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    nbeta = cfg.resolved_nbeta(has_data=True)
    t0, c0 = time.perf_counter(), time.process_time()
    out = estimate_learning_coeff_with_summary(
        model, loader, evaluate=evaluate, sampling_method=SGLD,
        optimizer_kwargs=dict(lr=cfg.epsilon, localization=cfg.gamma, nbeta=nbeta),
        num_chains=cfg.num_chains, num_draws=cfg.num_draws, num_burnin_steps=cfg.num_burnin, seed=cfg.seed,
        device=device, verbose=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # devinterp's own summary (its llc/std is torch's unbiased std over chains)
    return {"llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]), "seconds": elapsed, "cpu_s": cpu}


def busy_cpu_seconds() -> float:
    """Seconds of CPU time all processes on the machine have used (Linux /proc/stat), NaN elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def parse_contestant(name: str) -> dict:
    mode, *opts = name.split("+")
    if mode not in ("loop", "vmap") or not set(opts) <= {"compile", "bf16", "fast"}:
        raise ValueError(f"contestant must be 'devinterp' or '<loop|vmap>[+compile][+bf16][+fast]', got {name!r}")
    return {"chain_mode": mode, "compile": "compile" in opts,
            "compute_dtype": "bfloat16" if "bf16" in opts else None, "fast": "fast" in opts}


def run_ours(model, data, cfg: SGLDConfig, chain_mode: str, compile: bool, compute_dtype, fast: bool,
             loss=regression_loss):
    if fast:
        loss = fast_loss
    kw = dict(chain_mode=chain_mode, compile=compile, compute_dtype=compute_dtype, progress=False)
    if compile:  # pay and report the compile once, outside the timed run
        t0 = time.perf_counter()
        estimate_llc_module(model, loss, data, SGLDConfig(**{**cfg.__dict__, "num_draws": 2, "num_burnin": 0}), **kw)
        compile_s = time.perf_counter() - t0
    c0 = time.process_time()
    r = estimate_llc_module(model, loss, data, cfg, **kw)
    out = {"llc_mean": r.llc_mean, "llc_std": r.llc_std, "seconds": r.elapsed_s, "cpu_s": time.process_time() - c0,
           "flags": r.diagnostics}
    if compile:
        out["compile_s"] = compile_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="regression", choices=["regression", "lm"])
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--burnin", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--data-size", type=int, default=2**17)
    ap.add_argument("--contestants", default="devinterp,loop,loop+compile,vmap")
    ap.add_argument("--peak-gflops", type=float, default=190.0, help="fp32 peak of the device (2-core AVX-512: ~190)")
    ap.add_argument("--peak-bf16-gflops", type=float, default=840.0,
                    help="bf16 matmul peak of the device (2-core AVX-512-BF16, measured 2048² matmul: ~820-860)")
    ap.add_argument("--no-save", action="store_true", help="print the table only (smoke runs)")
    args = ap.parse_args()

    device = args.device
    if args.model == "regression":
        model = train_checkpoint(args.train_steps, device)
        data = sgld_data(args.data_size, device)
        cfg = SGLDConfig(epsilon=3e-4, gamma=100.0, nbeta=None, num_chains=args.chains, num_draws=args.draws,
                         num_burnin=args.burnin, batch_size=1024, seed=0)
        loss, evaluate = regression_loss, _devinterp_evaluate
        flops = step_flops(model, data, cfg.batch_size)
        flops_fast = step_flops(model, data, cfg.batch_size, loss=fast_loss)
        title = f"Regression transformer ({count_parameters(model):,} params)"
        setting = (f"m = 1024, ε = 3e-4, γ = 100, nβ = m/log m = {cfg.resolved_nbeta(True):.1f}; checkpoint: "
                   f"{args.train_steps} Adam steps; {flops / 1e9:.2f} GFLOP per fwd+bwd step (matmuls; +fast: "
                   f"{flops_fast / 1e9:.2f})")
    else:
        from stagewise.models.language import lm_forward_loss

        model, data, where = lm_setup(device, batch_size=16)
        cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=100 / math.log(100), num_chains=args.chains,
                         num_draws=args.draws, num_burnin=args.burnin, batch_size=16, seed=0)
        loss, evaluate = lm_forward_loss, _devinterp_evaluate_lm
        flops = flops_fast = step_flops(model, data, cfg.batch_size, loss=lm_forward_loss)
        title = f"Language model ({count_parameters(model):,} params, TransformerLens)"
        setting = (f"batch 16 × context 256 (every position), ε = 1e-3, γ = 100, nβ = 100/log 100 = "
                   f"{cfg.nbeta:.1f}; checkpoint: {where}; {flops / 1e9:.1f} GFLOP per fwd+bwd step (matmuls)")
    steps = cfg.num_chains * cfg.num_steps
    names = args.contestants.split(",")
    specs = {n: parse_contestant(n) for n in names if n != "devinterp"}  # fail before the long runs
    rows = []
    for name in names:
        busy0 = busy_cpu_seconds()
        if name == "devinterp":
            res = run_devinterp(model, data, cfg, device, evaluate)
            res["step_flops"] = flops
        else:
            if specs[name]["fast"] and args.model != "regression":
                raise ValueError("+fast is the regression transformer's predictions-only forward")
            res = run_ours(model, data, cfg, **specs[name], loss=loss)
            res["step_flops"] = flops_fast if specs[name]["fast"] else flops
            res["bf16"] = specs[name]["compute_dtype"] is not None
        res["name"] = name
        res["steps_per_s"] = steps / res["seconds"]
        res["gflops"] = res["step_flops"] * steps / res["seconds"] / 1e9
        res["cpu_use"] = res["cpu_s"] / (res["seconds"] * torch.get_num_threads())
        # CPU time other processes took meanwhile, in cores (0 on a quiet machine)
        res["others_cores"] = (busy_cpu_seconds() - busy0 - res["cpu_s"]) / res["seconds"]
        rows.append(res)
        print(json.dumps(res, default=str), flush=True)

    base = next((r for r in rows if r["name"] == "devinterp"), None)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    lines = [f"\n### {title}, {device} ({dev_name}, {torch.get_num_threads()} threads), "
             f"{time.strftime('%Y-%m-%d %H:%M')}",
             f"{cfg.num_chains} chains x ({cfg.num_burnin} burn-in + {cfg.num_draws} draws), {setting}; "
             f"peaks: fp32 {args.peak_gflops:.0f}, bf16 {args.peak_bf16_gflops:.0f} GFLOP/s\n",
             "| contestant | SGLD steps/s | ms/step | × devinterp | GFLOP/s | % of fp32 peak | % of bf16 peak | "
             "λ̂ mean ± s.e. (std) | cpu use | others | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['steps_per_s'] / base['steps_per_s']:.2f}" if base else "–"
        peak = f"{100 * r['gflops'] / args.peak_gflops:.0f}%" if device == "cpu" else "–"
        peak16 = f"{100 * r['gflops'] / args.peak_bf16_gflops:.0f}%" if device == "cpu" and r.get("bf16") else "–"
        sem = r["llc_std"] / math.sqrt(cfg.num_chains)
        notes = []
        if "compile_s" in r:
            notes.append(f"compile {r['compile_s']:.0f}s (not timed)")
        if r.get("flags"):
            notes.append(f"flags {r['flags']}")
        lines.append(f"| {r['name']} | {r['steps_per_s']:.1f} | {1000 / r['steps_per_s']:.1f} | {ratio} | "
                     f"{r['gflops']:.1f} | {peak} | {peak16} | {r['llc_mean']:.1f} ± {sem:.1f} ({r['llc_std']:.1f}) | "
                     f"{100 * r['cpu_use']:.0f}% | {r['others_cores']:.2f} | {'; '.join(notes)} |")
    ref = {r["name"]: r for r in rows}
    for r in rows:  # bf16 counts only if it stays within the fp32 run's standard error (same seed)
        twin = "+".join(p for p in r["name"].split("+") if p not in ("bf16", "fast"))
        if r.get("bf16") and twin in ref:
            sem = ref[twin]["llc_std"] / math.sqrt(cfg.num_chains)
            diff = r["llc_mean"] - ref[twin]["llc_mean"]
            verdict = ("s.e. undefined (one chain)" if not math.isfinite(sem)
                       else "within one standard error" if abs(diff) <= sem else "NOT within one standard error")
            lines.append(f"\n{r['name']} − {twin}: Δλ̂ = {diff:+.2f}, fp32 s.e. {sem:.2f}: {verdict}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.no_save:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "llc_benchmark.md", "a") as fh:
        fh.write(text)
    suffix = "" if args.model == "regression" else "_lm"
    with open(RESULTS / f"llc_benchmark_{device}{suffix}.json", "w") as fh:
        json.dump(rows, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
