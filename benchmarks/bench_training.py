"""Training throughput of the regression transformer (paper model, 51,717 parameters).

    .venv/bin/python benchmarks/bench_training.py [--batch 256] [--steps 300]

Times the shared training step (forward, backward, Adam) on fresh batches from the data
generator, and writes benchmarks/results/training_throughput.md.
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from stagewise.data.regression import RegressionBatches, RegressionTask, regression_loss
from stagewise.models.regression import RegressionTransformer, count_parameters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = RegressionTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = RegressionBatches(RegressionTask(), args.batch, seed=0)
    for s in range(20):  # warm-up
        loss = regression_loss(model, data(s))
        opt.zero_grad()
        loss.backward()
        opt.step()
    t0 = time.perf_counter()
    for s in range(args.steps):
        loss = regression_loss(model, data(s))
        opt.zero_grad()
        loss.backward()
        opt.step()
    rate = args.steps / (time.perf_counter() - t0)
    line = (f"| regression transformer ({count_parameters(model):,} params) | batch {args.batch} | "
            f"{rate:.1f} steps/s | {torch.get_num_threads()} threads | {platform.processor() or platform.machine()} |")
    print(line)
    out = Path(__file__).parent / "results" / "training_throughput.md"
    out.write_text("| model | batch | throughput | threads | cpu |\n|---|---|---|---|---|\n" + line + "\n")


if __name__ == "__main__":
    main()
