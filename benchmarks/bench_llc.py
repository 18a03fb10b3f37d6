"""Benchmark: SGLD LLC estimation, stagewise.llc against devinterp 1.3.2 (issue 4).

    .venv/bin/python benchmarks/bench_llc.py --device cpu            # the regression row
    .venv/bin/python benchmarks/bench_llc.py --device cuda
    .venv/bin/python benchmarks/bench_llc.py --draws 100 --burnin 20  # quick

Setting (issue 4): the paper's 51,717-parameter regression transformer at a trained checkpoint
(Adam, a few thousand steps, inline), 4 chains x (100 burn-in + 500 draws), batch m = 1024,
ε = 3e-4, γ = 100, nβ = m / log m, on a fixed SGLD data set. Contestants run interleaved in one
process (the machine is shared, so ratios within one run are what count). devinterp uses its own
estimator (ℓ(w*) averaged over C batches); ours pairs ℓ(w*) with each draw's batch.
Results are appended to benchmarks/results/llc_benchmark.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
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


def step_flops(model, data, batch_size: int) -> float:
    """FLOPs of one SGLD step's forward + backward (FlopCounterMode: matmuls only)."""
    from torch.utils.flop_counter import FlopCounterMode

    tokens, ys = data[0][:batch_size], data[1][:batch_size]
    with FlopCounterMode(display=False) as counter:
        regression_loss(model, (tokens, ys)).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _devinterp_evaluate(model, batch):
    return regression_loss(model, batch), {}


def run_devinterp(model, data, cfg: SGLDConfig, device: str):
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*data), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    nbeta = cfg.batch_size / math.log(cfg.batch_size)
    t0 = time.perf_counter()
    out = estimate_learning_coeff_with_summary(
        model, loader, evaluate=_devinterp_evaluate, sampling_method=SGLD,
        optimizer_kwargs=dict(lr=cfg.epsilon, localization=cfg.gamma, nbeta=nbeta),
        num_chains=cfg.num_chains, num_draws=cfg.num_draws, num_burnin_steps=cfg.num_burnin, seed=cfg.seed,
        device=device, verbose=False)
    elapsed = time.perf_counter() - t0
    # devinterp's own summary (its llc/std is torch's unbiased std over chains)
    return {"llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]), "seconds": elapsed}


def run_ours(model, data, cfg: SGLDConfig, chain_mode: str, compile: bool):
    if compile:  # pay and report the compile once, outside the timed run
        t0 = time.perf_counter()
        estimate_llc_module(model, regression_loss, data, SGLDConfig(**{**cfg.__dict__, "num_draws": 2,
                            "num_burnin": 0}), chain_mode=chain_mode, compile=True, progress=False)
        compile_s = time.perf_counter() - t0
    r = estimate_llc_module(model, regression_loss, data, cfg, chain_mode=chain_mode, compile=compile, progress=False)
    out = {"llc_mean": r.llc_mean, "llc_std": r.llc_std, "seconds": r.elapsed_s, "flags": r.diagnostics}
    if compile:
        out["compile_s"] = compile_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--burnin", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--data-size", type=int, default=2**17)
    ap.add_argument("--contestants", default="devinterp,loop,loop+compile,vmap")
    ap.add_argument("--peak-gflops", type=float, default=190.0, help="fp32 peak of the device (2-core AVX-512: ~190)")
    args = ap.parse_args()

    device = args.device
    model = train_checkpoint(args.train_steps, device)
    data = sgld_data(args.data_size, device)
    cfg = SGLDConfig(epsilon=3e-4, gamma=100.0, nbeta=None, num_chains=args.chains, num_draws=args.draws,
                     num_burnin=args.burnin, batch_size=1024, seed=0)
    flops = step_flops(model, data, cfg.batch_size)
    steps = cfg.num_chains * cfg.num_steps
    rows = []
    for name in args.contestants.split(","):
        if name == "devinterp":
            res = run_devinterp(model, data, cfg, device)
        else:
            mode, _, comp = name.partition("+")
            res = run_ours(model, data, cfg, chain_mode=mode, compile=comp == "compile")
        res["name"] = name
        res["steps_per_s"] = steps / res["seconds"]
        res["gflops"] = flops * steps / res["seconds"] / 1e9
        rows.append(res)
        print(json.dumps(res, default=str), flush=True)

    base = next((r for r in rows if r["name"] == "devinterp"), None)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    lines = [f"\n### Regression transformer (51,717 params), {device} ({dev_name}, {torch.get_num_threads()} threads), "
             f"{time.strftime('%Y-%m-%d %H:%M')}",
             f"{cfg.num_chains} chains x ({cfg.num_burnin} burn-in + {cfg.num_draws} draws), m = 1024, ε = 3e-4, "
             f"γ = 100, nβ = m/log m = {1024 / math.log(1024):.1f}; checkpoint: {args.train_steps} Adam steps; "
             f"{flops / 1e9:.2f} GFLOP per fwd+bwd step (matmuls)\n",
             "| contestant | SGLD steps/s | ms/step | × devinterp | GFLOP/s | % of peak | λ̂ mean ± std (chains) | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['steps_per_s'] / base['steps_per_s']:.2f}" if base else "–"
        peak = f"{100 * r['gflops'] / args.peak_gflops:.0f}%" if device == "cpu" else "–"
        notes = []
        if "compile_s" in r:
            notes.append(f"compile {r['compile_s']:.0f}s (not timed)")
        if r.get("flags"):
            notes.append(f"flags {r['flags']}")
        lines.append(f"| {r['name']} | {r['steps_per_s']:.1f} | {1000 / r['steps_per_s']:.1f} | {ratio} | "
                     f"{r['gflops']:.1f} | {peak} | {r['llc_mean']:.1f} ± {r['llc_std']:.1f} | {'; '.join(notes)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "llc_benchmark.md", "a") as fh:
        fh.write(text)
    with open(RESULTS / f"llc_benchmark_{device}.json", "w") as fh:
        json.dump(rows, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
