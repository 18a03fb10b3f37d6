"""Pilot for issue #16: the regression transformer of the paper (model, batch 256, one-cycle Adam
lr 3e-3) trained for ``--steps`` steps on seed 0, through the same cached code path the notebooks
use (``stagewise.runs.regression_run``), so a profile with this schedule reuses the run.

    python benchmarks/pilots/regression_schedule.py --steps 100000 --threads 1

Prints the wall time; the analysis (LLC, boundaries, signatures) is done by notebook 02 at the
matching profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from stagewise.profiles import get_profile
from stagewise.runs import regression_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume-every", type=int, default=5_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = get_profile("regression", "cpu")
    train = dataclasses.replace(base.train, num_steps=args.steps, resume_every=args.resume_every)
    cfg = dataclasses.replace(base, train=train)
    t0 = time.perf_counter()
    run = regression_run(cfg, args.seed)
    print(f"steps {args.steps} seed {args.seed} threads {args.threads}: {time.perf_counter() - t0:.0f} s "
          f"(run's own training seconds {run.seconds:.0f}); final smoothed loss {run.smoothed_loss()[-1]:.4f}; "
          f"dir {run.directory}")


if __name__ == "__main__":
    main()
