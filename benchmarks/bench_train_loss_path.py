"""Benchmark: a regression training step through the full forward against the predictions-only one.

The `cpu` profiles of notebooks 02 (regression) and 03 (transient ridge) train through
``train_loss="predictions_only"`` (:func:`stagewise.data.regression.regression_train_loss`): the same
loss and gradient up to float rounding. This times one training step (fresh batch from the
profile's generator, forward, loss, backward, Adam) both ways at each profile's model and batch, in
alternating rounds on one thread (ratios within one run only: a shared VM drifts between minutes),
and checks that the two losses agree at the initial weights.

    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/bench_train_loss_path.py \\
        --out benchmarks/results/training_loss_path.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from stagewise.data.regression import RegressionBatches, regression_train_loss
from stagewise.models.regression import RegressionTransformer


def profiles():
    from stagewise.profiles.regression import PROFILES as REG
    from stagewise.profiles.ridge import PROFILES as RIDGE

    return {"02 regression cpu": (REG["cpu"].model, REG["cpu"].task, REG["cpu"].batch_size),
            "03 transient ridge cpu": (RIDGE["cpu"].model, RIDGE["cpu"].task, RIDGE["cpu"].batch_size)}


def time_steps(model_cfg, task, batch_size, path: str, steps: int, start: int) -> float:
    torch.manual_seed(0)
    model = RegressionTransformer(model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data, loss_fn = RegressionBatches(task, batch_size, seed=0), regression_train_loss(path)
    for s in range(3):  # warm-up
        opt.zero_grad(); loss_fn(model, data(s)).backward(); opt.step()  # noqa: E702
    t0 = time.perf_counter()
    for s in range(start, start + steps):
        opt.zero_grad(); loss_fn(model, data(s)).backward(); opt.step()  # noqa: E702
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per measurement (default 100)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1")
    torch.set_num_threads(1)
    result = {}
    for name, (model_cfg, task, batch) in profiles().items():
        torch.manual_seed(0)
        model = RegressionTransformer(model_cfg)
        b = RegressionBatches(task, batch, seed=0)(0)
        full, pred = (regression_train_loss(p)(model, b).item() for p in ("full", "predictions_only"))
        ms = {"full": [], "predictions_only": []}
        for r in range(args.rounds):
            for path in ms:
                ms[path].append(time_steps(model_cfg, task, batch, path, args.steps, 1000 * (r + 1)))
        med = {p: statistics.median(v) for p, v in ms.items()}
        result[name] = {"batch": batch, "ms_per_step": ms, "median_ms_per_step": med,
                        "speedup": med["full"] / med["predictions_only"],
                        "initial_loss": {"full": full, "predictions_only": pred}}
        print(f"{name}: full {med['full']:.1f} ms, predictions-only {med['predictions_only']:.1f} ms per step, "
              f"{result[name]['speedup']:.2f}x; initial loss {full:.6f} vs {pred:.6f}", flush=True)
    if args.out:
        from stagewise.hardware import machine_description

        with open(args.out, "w") as f:
            json.dump({"written": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
                       "threads": 1, "steps": args.steps, "rounds": args.rounds, "profiles": result}, f, indent=1)


if __name__ == "__main__":
    main()
