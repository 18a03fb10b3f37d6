"""glibc's allocator, default against kept freed memory (stagewise.hardware.MALLOC_SETTINGS).

    .venv/bin/python benchmarks/bench_malloc.py [--rounds 2] [--out benchmarks/results/malloc.md]

Each workload runs in a fresh process (the allocator reads its settings at start), pinned to one
core with one thread, default and tuned alternating for ``--rounds`` rounds; per call: wall
seconds, system seconds and minor page faults after a warm-up call, and the process's peak RSS.
The workloads are what the notebooks repeat thousands of times: a training step of the `cpu`
language model (the plain-torch twin, batch 8 x 256), a probe row of that model
(``lm_probe_row`` at its last checkpoint when the `cpu` run is cached, else at initialisation), the
Hessian statistics of the `cpu` regression model (10 Hutchinson probes + Lanczos, batch 1024), and
an SGLD gradient of the language model on 4 contexts (the LLC sweeps' step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_name  # noqa: E402

WORKLOADS = ["lm_train_step", "lm_probe_row", "regression_hessian", "lm_sgld_gradient"]

_CHILD = r'''
import json, resource, sys, time, torch
torch.set_num_threads(1)
name = sys.argv[1]
torch.manual_seed(0)
if name in ("lm_train_step", "lm_sgld_gradient"):
    from stagewise.models.language import LanguageModelConfig
    from stagewise.models.language_fast import lm_fast_train_loss, make_trainable_fast_language_model
    twin = make_trainable_fast_language_model(LanguageModelConfig(n_layers=2, n_ctx=256)).train()
    if name == "lm_train_step":
        opt = torch.optim.AdamW(twin.parameters(), lr=1e-3, fused=True)
        tokens = torch.randint(0, 5000, (8, 256))
        def call():
            loss = lm_fast_train_loss(twin, (tokens,)); opt.zero_grad(); loss.backward(); opt.step()
        n = 8
    else:
        tokens = torch.randint(0, 5000, (4, 256))
        params = list(twin.parameters())
        def call():
            torch.autograd.grad(lm_fast_train_loss(twin, (tokens,)), params)
        n = 20
elif name == "lm_probe_row":
    from stagewise.data.language import load_contexts, load_token_stream
    from stagewise.models.language import make_language_model
    from stagewise.probes import language as PL
    from stagewise.profiles import get_profile
    from stagewise.runs import language_run
    cfg = get_profile("language", "cpu")
    run = language_run(cfg, progress=False, train_missing=False)
    model = run.load_model(int(run.checkpoint_steps[-1])) if run is not None else make_language_model(cfg.model)
    val = load_contexts(cfg.corpus, "validation", cfg.model.n_ctx).long()
    bigrams = PL.bigram_distribution(load_token_stream(cfg.corpus, "train"), cfg.model.d_vocab)
    probe = PL.lm_probe_config("cpu")
    call = lambda: PL.lm_probe_row(model, val, bigrams, probe)
    n = 1
else:
    from stagewise.data.regression import regression_sgld_loss, sample_batch
    from stagewise.hessian import module_hessian_statistics
    from stagewise.models.regression import RegressionTransformer
    from stagewise.profiles import get_profile
    reg = get_profile("regression", "cpu")
    model = RegressionTransformer(reg.model)
    b = sample_batch(reg.task, 1024, torch.Generator().manual_seed(2024))
    loss = regression_sgld_loss(reg.sgld_loss)
    call = lambda: module_hessian_statistics(model, loss, (b.tokens, b.ys), num_probes=10, chunk_size=10, tol=1e-3,
                                             seed=0)
    n = 1
call()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(n):
    call()
dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": dt / n, "sys_seconds": (r1.ru_stime - r0.ru_stime) / n,
                  "minor_faults": (r1.ru_minflt - r0.ru_minflt) / n, "max_rss_mb": r1.ru_maxrss / 1024}))
'''


def run_one(workload: str, tuned: bool, core: int) -> dict:
    from stagewise.hardware import malloc_environment

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env = malloc_environment(base) if tuned else {**base, "STAGEWISE_MALLOC": "system"}
    cmd = [sys.executable, "-c", _CHILD, workload]
    if hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(core)] + cmd
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "malloc.md")
    args = ap.parse_args()
    rows = []
    for workload in args.workloads:
        got = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                got[tuned].append(run_one(workload, tuned, args.core))
                print(workload, "tuned" if tuned else "default", got[tuned][-1], flush=True)
        med = {t: {k: statistics.median(r[k] for r in got[t]) for k in got[t][0]} for t in got}
        rows.append((workload, med[False], med[True]))
    lines = [f"### glibc allocator, default vs kept freed memory ({cpu_name()}, one thread, "
             f"{time.strftime('%Y-%m-%d %H:%M')})", "",
             f"`benchmarks/bench_malloc.py`, medians of {args.rounds} alternating rounds, each a fresh process; "
             "tuned = `stagewise.hardware.MALLOC_SETTINGS`.", "",
             "| workload | default s/call | tuned s/call | speed-up | default sys s | tuned sys s | "
             "default faults/call | tuned faults/call | default peak RSS MB | tuned peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w, d, t in rows:
        lines.append(f"| {w} | {d['seconds']:.3f} | {t['seconds']:.3f} | {d['seconds'] / t['seconds']:.2f}x | "
                     f"{d['sys_seconds']:.3f} | {t['sys_seconds']:.3f} | {d['minor_faults']:,.0f} | "
                     f"{t['minor_faults']:,.0f} | {d['max_rss_mb']:,.0f} | {t['max_rss_mb']:,.0f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
