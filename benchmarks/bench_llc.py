"""Benchmark: SGLD LLC estimation, stagewise against devinterp 1.3.2 and 2.0.1 (issues 4 and 17).

Run it in an environment with devinterp 1.3.2 beside stagewise (devinterp 2.0.1, an LM-oriented
rewrite, runs in its own environment: ``--devinterp2-python``). The two environments, as built for
the results in ``llc_benchmark.md``:

    python3 -m venv di13 && di13/bin/pip install torch==2.13.0 && di13/bin/pip install devinterp==1.3.2 \
        && di13/bin/pip install -e .
    python3 -m venv di20 && di20/bin/pip install torch==2.13.0 && di20/bin/pip install devinterp==2.0.1 \
        transformer-lens==3.9.0 scipy scikit-learn pandas && di20/bin/pip install --no-deps -e .

    PY=/work/venvs/di13/bin/python
    $PY benchmarks/bench_llc.py                                   # regression, the issue's setting
    $PY benchmarks/bench_llc.py --repeats 2 --contestants devinterp,sweep-fast,sweep-full,sweep-fast-bf16@1x5
    $PY benchmarks/bench_llc.py --model lm --chains 2 --burnin 0 --draws 20 \\
        --contestants devinterp,devinterp2,sweep-tl,sweep-fast,sweep-fast-s4 \\
        --devinterp2-python /work/venvs/di20/bin/python

Contestants
-----------
``devinterp``      devinterp 1.3.2 ``estimate_learning_coeff_with_summary`` on the module (regression:
                   ``regression_loss``; LM: the TransformerLens model with ``lm_forward_loss``).
``devinterp2``     (LM) devinterp 2.0.1 ``devinterp.slt.llc.llc`` on the TransformerLens model, an HF
                   ``Dataset`` of ``input_ids``, its default per-token cross-entropy, zarr output in a
                   temporary directory; run by ``bench_llc_devinterp2.py`` in the other environment's
                   Python, back to back with the others (its import time is not timed; the call is).
``sweep-*``        ours, through the entry point the notebooks use: ``stagewise.llc.estimate_llc_sweep``
                   (``cache=False``) on the checkpoint saved to a file, exactly as
                   ``stagewise.runs.regression_llc`` / ``language_llc`` call it. The whole call is timed
                   (model build, checkpoint load, data key, sampling).
  regression:      ``sweep-full`` = ``regression_forward_loss``; ``sweep-fast`` =
                   ``regression_prediction_loss`` (the predictions-only forward: what the profiles run,
                   ``regression_sgld_loss(profile.sgld_loss)``); compute dtype 'auto' (the profiles'
                   ``sgld_dtype``: bf16 only where ``fast_bf16_support`` says it is faster).
  LM:              ``sweep-tl`` = the HookedTransformer with ``lm_forward_loss`` (reference);
                   ``sweep-fast`` = ``language_sgld_model(profile)`` at stride 1 (the plain-torch twin
                   FastAttentionOnlyLM, every position: the same loss devinterp computes);
                   ``sweep-fast-s4`` = the cpu profile's own ``language_sgld_model`` (stride 4: one
                   position in four per context, an unbiased but noisier loss, not the same number).
  ``-bf16``        appended: compute dtype forced to bfloat16 (autocast) instead of 'auto'.
``-fp32``        appended: compute dtype forced to float32 (the exact path) instead of 'auto'.
``@CxD``           appended to any name: that contestant runs C chains x D draws, no burn-in (a short
                   timing-only run, e.g. bf16 on a CPU without bf16 instructions).
Legacy: ``<loop|vmap>[+compile][+bf16][+fast]`` (regression only) call ``estimate_llc_module`` directly.

Settings, the same for every contestant (ε, γ, nβ, chains, draws, batch, seed):
regression: the paper's 51,717-parameter transformer at a trained checkpoint (Adam, ``--train-steps``),
4 chains x (100 + 500), m = 1024, ε = 3e-4, γ = 100, nβ = m / log m, SGLD data ``sgld_dataset``.
LM: the paper's 2-layer attention-only LM (the cpu profile's shapes: context 256, d_vocab 5000), batch
16 x 256 of the held-out SGLD split, ε = 1e-3, γ = 100, nβ = 100 / log 100 (D.1.4); weights from
``--lm-checkpoint`` (a state dict, or a dict with a "model" state dict, of either model class), else
the cpu-profile run's last cached checkpoint, else a fresh initialisation (the table says which).

Estimators differ by design: devinterp 1.3.2 averages ℓ(w*) over C batches, devinterp 2.0.1 over
``num_init_loss_batches`` batches per chain (set to 1 here: C batches, as 1.3.2) and averages the
loss over burn-in and draws alike; ours pairs ℓ(w*) with each draw's batch (one extra forward per
draw, shared by the chains; not in the FLOP count below).

Columns: "GFLOP/s" = matmul FLOPs of one fwd+bwd chain-step of that contestant's loss path
(FlopCounterMode) x chain-steps / wall time. "per CPU-s" columns divide by the process's CPU time
instead of wall time: on a shared machine they show what each contestant does with the CPU time it
gets (the wall-time ratio is what a user feels; the two agree on a quiet machine). Peak:
``--peak-gflops`` per core (default: measured at start, the best of a few 2048² and 1024² fp32
matmuls on one thread, per second of CPU time). "cpu use" = process CPU time / (wall x threads);
"others" = CPU time other processes took meanwhile, in cores (/proc/stat). A name may appear more than once in
``--contestants`` (e.g. ``devinterp,sweep-fast,sweep-full,devinterp``: devinterp before and after,
to expose drift in the background load), and ``--repeats R`` runs the whole list R times (ABC ABC);
"round" is a contestant's n-th run; ratios are to the mean of the devinterp runs.
Results are appended to benchmarks/results/llc_benchmark.md and written to
benchmarks/results/llc_benchmark_<device>_<model>_<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from machine_info import busy_cpu_seconds, cpu_name  # noqa: E402  (benchmarks/, no stagewise import)
from stagewise.data.regression import (RegressionTask, regression_forward_loss, regression_loss,
                                       regression_prediction_loss, sample_batch, sgld_dataset)
from stagewise.llc import SGLDConfig, estimate_llc_module, estimate_llc_sweep
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig, count_parameters

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------
# machine
# ------------------------------------------------------------------------------------------------


def matmul_gflops(n: int, dtype: torch.dtype, reps: int) -> float:
    """Best of ``reps`` n x n matmuls (after one warm-up), GFLOP per second of this process's CPU
    time (so that time the scheduler gives to other processes does not count; one thread)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best / 1e9


# ------------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------------


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
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f}s, final batch loss {loss.item():.4f}", flush=True)
    return model.eval()


def regression_checkpoint(steps: int, device: str, reuse: Path | None):
    """The trained regression transformer (``reuse``: a state-dict file written by an earlier run)."""
    model = RegressionTransformer(RegressionTransformerConfig())
    if reuse is not None and reuse.exists():
        model.load_state_dict(torch.load(reuse, map_location="cpu"))
        print(f"checkpoint reused from {reuse}", flush=True)
        return model.to(device).eval()
    model = train_checkpoint(steps, device)
    if reuse is not None:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, reuse)
    return model


def lm_setup(device: str, batch_size: int, checkpoint: Path | None):
    """(TransformerLens model, SGLD contexts, where the weights came from) at the cpu profile's shapes."""
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
    torch.manual_seed(0)
    model = make_language_model(profile.model)
    if checkpoint is not None:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = raw.get("model", raw)
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(state))
        if missing:
            raise ValueError(f"--lm-checkpoint {checkpoint} lacks parameters {missing[:5]}")
        with torch.no_grad():  # parameters only: the twin's placeholder buffers differ from TransformerLens'
            for name, p in params.items():
                p.copy_(state[name])
        where = f"{checkpoint}" + (f", training step {raw['step']}" if isinstance(raw.get("step"), int) else "")
    elif (directory / "done.json").exists():
        run = TrainedRun(directory, partial(make_language_model, profile.model))
        step = int(run.checkpoint_steps[-1])
        model, where = run.load_model(step), f"cpu-profile run, step {step}"
    else:
        where = "fresh initialisation (torch.manual_seed(0); no cached cpu-profile run)"
    model = model.to(device).eval()
    contexts = load_contexts(profile.corpus, "sgld", profile.model.n_ctx).long()
    if len(contexts) < batch_size:
        raise ValueError(f"the SGLD split has {len(contexts)} contexts, fewer than the batch size {batch_size}")
    return model, (contexts.to(device),), where, profile


def step_flops(model, data, batch_size: int, loss) -> float:
    """Matmul FLOPs of one fwd+bwd of ``loss(model, batch)`` (FlopCounterMode; the CPU flash-attention
    kernel, which it does not know, counted as its CUDA twin is: QK^T and AV in full, causal or not)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(q, k, v, *args, out_shape=None, **kwargs):  # FlopCounterMode passes shapes
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    cpu_sdpa = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    batch = tuple(column[:batch_size] for column in data)
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------
# contestants
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sweep:
    """Ours through estimate_llc_sweep: the model factory, loss and compute-dtype setting."""

    model_fn: object
    loss: object
    dtype: str
    label: str


def sweep_contestants(model_kind: str, profile=None) -> dict[str, Sweep]:
    if model_kind == "regression":
        fn = partial(RegressionTransformer, RegressionTransformerConfig())
        base = {"sweep-full": Sweep(fn, regression_forward_loss, "auto", "regression_forward_loss"),
                "sweep-fast": Sweep(fn, regression_prediction_loss, "auto",
                                    "regression_prediction_loss (the profiles' path)")}
    else:
        from stagewise.models.language import lm_forward_loss, make_language_model
        from stagewise.runs import language_sgld_model

        s1_fn, s1_loss = language_sgld_model(dataclasses.replace(profile, sgld_stride=1, sgld_model="fast"))
        s4_fn, s4_loss = language_sgld_model(profile)
        base = {"sweep-tl": Sweep(partial(make_language_model, profile.model), lm_forward_loss, "auto",
                                  "HookedTransformer + lm_forward_loss"),
                "sweep-fast": Sweep(s1_fn, s1_loss, "auto", "language_sgld_model twin, stride 1"),
                "sweep-fast-s4": Sweep(s4_fn, s4_loss, "auto",
                                       f"language_sgld_model(cpu profile): twin, stride {profile.sgld_stride}")}
    out = dict(base)
    for name, s in base.items():
        out[name + "-bf16"] = dataclasses.replace(s, dtype="bfloat16", label=s.label + ", bf16 autocast")
        out[name + "-fp32"] = dataclasses.replace(s, dtype="float32", label=s.label + ", float32")
    return out


def split_shortening(name: str, cfg: SGLDConfig) -> tuple[str, SGLDConfig, bool]:
    """``name@CxD`` -> (name, C chains x D draws without burn-in, True)."""
    if "@" not in name:
        return name, cfg, False
    base, spec = name.split("@", 1)
    try:
        chains, draws = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"a contestant's shortening must be '@<chains>x<draws>', got {name!r}") from None
    return base, dataclasses.replace(cfg, num_chains=chains, num_draws=draws, num_burnin=0), True


def parse_legacy(name: str) -> dict:
    mode, *opts = name.split("+")
    if mode not in ("loop", "vmap") or not set(opts) <= {"compile", "bf16", "fast"}:
        raise ValueError(f"unknown contestant {name!r}: devinterp, devinterp2, sweep-* (see --help) or "
                         f"'<loop|vmap>[+compile][+bf16][+fast]'")
    return {"chain_mode": mode, "compile": "compile" in opts,
            "compute_dtype": "bfloat16" if "bf16" in opts else None, "fast": "fast" in opts}


def _evaluate_regression(model, batch):
    return regression_loss(model, batch), {}


def _evaluate_lm(model, batch):
    from stagewise.models.language import lm_forward_loss

    return lm_forward_loss(model, batch), {}


def run_devinterp(model, data, cfg: SGLDConfig, device: str, evaluate) -> dict:
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    nbeta = cfg.resolved_nbeta(has_data=True)
    t0, c0 = time.perf_counter(), time.process_time()
    loader = DataLoader(TensorDataset(*data), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    out = estimate_learning_coeff_with_summary(
        model, loader, evaluate=evaluate, sampling_method=SGLD,
        optimizer_kwargs=dict(lr=cfg.epsilon, localization=cfg.gamma, nbeta=nbeta),
        num_chains=cfg.num_chains, num_draws=cfg.num_draws, num_burnin_steps=cfg.num_burnin, seed=cfg.seed,
        device=device, verbose=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # devinterp's own summary; llc/std is torch's unbiased std over chains
    return {"llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]), "seconds": elapsed, "cpu_s": cpu}


def run_devinterp2(python: str, state_path: Path, contexts_path: Path, cfg: SGLDConfig, threads: int) -> dict:
    """devinterp 2.0.1 in its own environment (a child process; this one waits, idle)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [python, str(HERE / "bench_llc_devinterp2.py"), "--state", str(state_path), "--contexts",
               str(contexts_path), "--epsilon", repr(cfg.epsilon), "--gamma", repr(cfg.gamma), "--nbeta",
               repr(cfg.resolved_nbeta(True)), "--chains", str(cfg.num_chains), "--draws", str(cfg.num_draws),
               "--burnin", str(cfg.num_burnin), "--batch-size", str(cfg.batch_size), "--seed", str(cfg.seed),
               "--threads", str(threads), "--out", str(out), "--zarr-dir", tmp]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"devinterp 2.0.1 run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        res = json.loads(out.read_text())
        res["process_wall_s"] = time.perf_counter() - t0
        return res


def run_sweep(sweep: Sweep, state_path: Path, data, cfg: SGLDConfig, device: str) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    result = estimate_llc_sweep([(0, state_path)], model_fn=sweep.model_fn, loss=sweep.loss, data=data, config=cfg,
                                compute_dtype=sweep.dtype, cache=False, progress=False,
                                device=None if device == "cpu" else device).results[0]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"llc_mean": result.llc_mean, "llc_std": result.llc_std, "seconds": elapsed, "cpu_s": cpu,
            "sampler_s": result.elapsed_s, "compute_dtype": result.compute_dtype or "float32",
            "flags": result.diagnostics}


def run_legacy(model, data, cfg: SGLDConfig, chain_mode: str, compile: bool, compute_dtype, fast: bool) -> dict:
    loss = regression_prediction_loss if fast else regression_forward_loss
    kw = dict(chain_mode=chain_mode, compile=compile, compute_dtype=compute_dtype, progress=False)
    out = {}
    if compile:  # pay and report the compile once, outside the timed run
        t0 = time.perf_counter()
        estimate_llc_module(model, loss, data, dataclasses.replace(cfg, num_draws=2, num_burnin=0), **kw)
        out["compile_s"] = time.perf_counter() - t0
    c0 = time.process_time()
    r = estimate_llc_module(model, loss, data, cfg, **kw)
    return {**out, "llc_mean": r.llc_mean, "llc_std": r.llc_std, "seconds": r.elapsed_s,
            "cpu_s": time.process_time() - c0, "compute_dtype": compute_dtype or "float32", "flags": r.diagnostics}


# ------------------------------------------------------------------------------------------------
# where the time goes
# ------------------------------------------------------------------------------------------------

CATEGORIES = [  # (category, substrings of aten op names), first match wins
    ("attention kernel (SDPA)", ("scaled_dot_product", "flash_attention")),
    ("matmul (mm/bmm/addmm)", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul",
                               "aten::linear", "aten::einsum", "aten::dot", "aten::mv")),
    ("layer norm", ("layer_norm",)),
    ("softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("embedding / gather / index", ("embedding", "gather", "index", "scatter", "masked_fill")),
    ("copies / layout", ("copy_", "clone", "contiguous", "cat", "stack", "to_copy", "_to_copy", "reshape", "view",
                         "permute", "transpose", "expand", "split", "slice", "select", "unbind", "as_strided",
                         "empty", "zeros", "ones", "fill_", "tril", "arange")),
    ("elementwise (add/mul/sum/noise)", ("add", "mul", "sub", "div", "sum", "mean", "pow", "sqrt", "rsqrt", "neg",
                                         "where", "normal", "randn", "exp", "log", "abs", "max", "min", "var", "eq",
                                         "ne", "lt", "gt", "isnan", "isfinite", "any", "all")),
]


def profile_sweep(sweep: Sweep, state_path: Path, data, cfg: SGLDConfig, steps: int) -> dict:
    """torch.profiler over ``steps`` SGLD steps of one chain through the sweep: self CPU time per op
    category (profiler overhead inflates small ops a little)."""
    from torch.profiler import ProfilerActivity, profile

    small = dataclasses.replace(cfg, num_chains=1, num_burnin=0, num_draws=steps)
    estimate_llc_sweep([(0, state_path)], sweep.model_fn, sweep.loss, data, small, compute_dtype=sweep.dtype,
                       cache=False, progress=False)  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        estimate_llc_sweep([(0, state_path)], sweep.model_fn, sweep.loss, data, small, compute_dtype=sweep.dtype,
                           cache=False, progress=False)
    wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        cat = next((c for c, keys in CATEGORIES if any(k in e.key for k in keys)), "other aten ops")
        shares[cat] = shares.get(cat, 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return {"wall_s": wall, "steps": steps, "aten_self_s": total / 1e6,
            "categories": {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
            "top_ops": [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in top]}


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="regression", choices=["regression", "lm"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every contestant (default: torch's)")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--reuse-checkpoint", type=Path, default=None,
                    help="regression: a state-dict file to reuse (written there after training if absent)")
    ap.add_argument("--lm-checkpoint", type=Path, default=None)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--burnin", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--data-size", type=int, default=2**17)
    ap.add_argument("--contestants", default="devinterp,sweep-fast,sweep-full")
    ap.add_argument("--repeats", type=int, default=1, help="run the contestant list this many times in order")
    ap.add_argument("--devinterp2-python", default=None, help="Python of the environment with devinterp 2.0.1")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="fp32 matmul peak of ONE core in GFLOP/s (default: measured at start)")
    ap.add_argument("--profile", default=None,
                    help="sweep contestants (comma-separated) to profile with torch.profiler after the timed runs")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--no-save", action="store_true", help="print the table only (smoke runs)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = args.device
    machine = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
               "loadavg_start": os.getloadavg()}
    try:
        import devinterp

        machine["devinterp"] = getattr(devinterp, "__version__", None) or _dist_version("devinterp")
    except ImportError:
        machine["devinterp"] = None
    if device == "cpu":
        from stagewise.llc import fast_bf16_support

        machine["bf16_fast"], machine["bf16_reason"] = fast_bf16_support("cpu")
        if args.peak_gflops is None:
            saved = torch.get_num_threads()
            torch.set_num_threads(1)
            machine["peak_fp32_1core"] = max(matmul_gflops(2048, torch.float32, 5), matmul_gflops(1024, torch.float32, 10))
            machine["bf16_matmul_1core_1024"] = matmul_gflops(1024, torch.bfloat16, 1)
            torch.set_num_threads(saved)
            print(f"measured peaks, one thread: fp32 {machine['peak_fp32_1core']:.1f} GFLOP/s; "
                  f"bf16 1024² {machine['bf16_matmul_1core_1024']:.1f} GFLOP/s", flush=True)
        else:
            machine["peak_fp32_1core"] = args.peak_gflops
    tmpdir = Path(tempfile.mkdtemp(prefix="bench_llc_"))
    state_path = tmpdir / "checkpoint.pt"
    if args.model == "regression":
        model = regression_checkpoint(args.train_steps, device, args.reuse_checkpoint)
        data = sgld_dataset(RegressionTask(), args.data_size)
        data = tuple(c.to(device) for c in data)
        cfg = SGLDConfig(epsilon=3e-4, gamma=100.0, nbeta=None, num_chains=args.chains, num_draws=args.draws,
                         num_burnin=args.burnin, batch_size=1024, seed=0)
        evaluate, profile = _evaluate_regression, None
        sweeps = sweep_contestants("regression")
        flops = {"devinterp": step_flops(model, data, cfg.batch_size, regression_forward_loss),
                 "sweep-full": step_flops(model, data, cfg.batch_size, regression_forward_loss),
                 "sweep-fast": step_flops(model, data, cfg.batch_size, regression_prediction_loss)}
        title = f"Regression transformer ({count_parameters(model):,} params)"
        where = f"{args.train_steps} Adam steps"
        setting = (f"m = 1024, ε = 3e-4, γ = 100, nβ = m/log m = {cfg.resolved_nbeta(True):.1f}; SGLD data "
                   f"sgld_dataset({args.data_size}); checkpoint: {where}; matmul GFLOP per fwd+bwd chain-step: full "
                   f"{flops['sweep-full'] / 1e9:.2f}, predictions-only {flops['sweep-fast'] / 1e9:.2f}")
    else:
        from stagewise.models.language import lm_forward_loss

        model, data, where, profile = lm_setup(device, 16, args.lm_checkpoint)
        cfg = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=100 / math.log(100), num_chains=args.chains,
                         num_draws=args.draws, num_burnin=args.burnin, batch_size=16, seed=0)
        evaluate = _evaluate_lm
        sweeps = sweep_contestants("lm", profile)
        twin = sweeps["sweep-fast"].model_fn()
        twin.load_state_dict(model.state_dict(), strict=False)
        flops = {"devinterp": step_flops(model, data, cfg.batch_size, lm_forward_loss)}
        flops["devinterp2"] = flops["sweep-tl"] = flops["devinterp"]
        flops["sweep-fast"] = step_flops(twin, data, cfg.batch_size, sweeps["sweep-fast"].loss)
        flops["sweep-fast-s4"] = step_flops(twin, data, cfg.batch_size, sweeps["sweep-fast-s4"].loss)
        title = f"Language model ({count_parameters(model):,} params, TransformerLens and its twin)"
        setting = (f"batch 16 × context 256, ε = 1e-3, γ = 100, nβ = 100/log 100 = {cfg.nbeta:.1f}; checkpoint: "
                   f"{where}; matmul GFLOP per fwd+bwd chain-step: TransformerLens {flops['sweep-tl'] / 1e9:.1f}, "
                   f"twin {flops['sweep-fast'] / 1e9:.1f} (stride 1), {flops['sweep-fast-s4'] / 1e9:.1f} "
                   f"(stride {profile.sgld_stride})")
        torch.save(data[0].cpu(), tmpdir / "contexts.pt")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, state_path)
    for key in list(flops):
        flops[key + "-bf16"] = flops[key + "-fp32"] = flops[key]

    names = args.contestants.split(",")
    plan = []  # fail before the long runs
    for name in names:
        base, c_cfg, short = split_shortening(name, cfg)
        if base in ("devinterp", "devinterp2") or base in sweeps:
            if base == "devinterp2" and (args.model != "lm" or not args.devinterp2_python):
                raise ValueError("devinterp2 is the LM contestant and needs --devinterp2-python")
            plan.append((name, base, c_cfg, short, None))
        elif args.model == "regression":
            plan.append((name, base, c_cfg, short, parse_legacy(base)))
        else:
            raise ValueError(f"unknown LM contestant {name!r}; choose from devinterp, devinterp2, {', '.join(sweeps)}")
    print(f"{title}; {setting}; threads {threads}", flush=True)

    rows = []
    seen: dict[str, int] = {}
    for name, base, c_cfg, short, legacy in plan * args.repeats:
        seen[name] = rnd = seen.get(name, 0) + 1  # the round: this contestant's n-th run
        busy0, load0 = busy_cpu_seconds(), os.getloadavg()[0]
        if base == "devinterp":
            res = run_devinterp(model, data, c_cfg, device, evaluate)
        elif base == "devinterp2":
            res = run_devinterp2(args.devinterp2_python, state_path, tmpdir / "contexts.pt", c_cfg, threads)
        elif legacy is None:
            res = run_sweep(sweeps[base], state_path, data, c_cfg, device)
            res["label"] = sweeps[base].label
        else:
            res = run_legacy(model, data, c_cfg, **legacy)
        steps = c_cfg.num_chains * c_cfg.num_steps
        res.update(name=name, round=rnd, short=short, chains=c_cfg.num_chains, chain_steps=steps)
        res["step_flops"] = flops.get(base, flops.get("sweep-fast" if legacy and legacy["fast"] else "sweep-full"))
        res["steps_per_s"] = steps / res["seconds"]
        res["gflops"] = res["step_flops"] * steps / res["seconds"] / 1e9
        res["steps_per_cpu_s"] = steps / res["cpu_s"]
        res["gflop_per_cpu_s"] = res["step_flops"] * steps / res["cpu_s"] / 1e9
        res["cpu_use"] = res["cpu_s"] / (res["seconds"] * threads)
        if "others_cores" not in res:  # the devinterp 2.0.1 child measures its own window
            res["others_cores"] = (busy_cpu_seconds() - busy0 - res["cpu_s"]) / res["seconds"]
        res["loadavg1_start"] = load0
        res["llc_sem"] = res["llc_std"] / math.sqrt(c_cfg.num_chains) if c_cfg.num_chains > 1 else float("nan")
        rows.append(res)
        print(json.dumps(res, default=str), flush=True)

    prof = {}
    for name in filter(None, (args.profile or "").split(",")):
        prof[name] = profile_sweep(sweeps[name], state_path, data, cfg, args.profile_steps)
        print(json.dumps(prof[name], indent=1), flush=True)

    text = render(rows, machine, title, setting, cfg, threads, device, prof)
    print(text)
    if args.no_save:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "llc_benchmark.md", "a") as fh:
        fh.write(text)
    stamp = time.strftime("%Y%m%d")
    with open(RESULTS / f"llc_benchmark_{device}_{args.model}_{stamp}.json", "w") as fh:
        json.dump({"machine": machine, "setting": setting, "config": dataclasses.asdict(cfg), "rows": rows,
                   "profile": prof, "command": " ".join(sys.argv)}, fh, indent=2, default=str)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def render(rows, machine, title, setting, cfg, threads, device, prof) -> str:
    peak1 = machine.get("peak_fp32_1core", float("nan"))
    ncores = machine.get("cpu_count") or 1
    lines = [f"\n### {title}, {device} ({machine['cpu']}, {ncores} vCPUs, {threads} thread(s)), "
             f"{time.strftime('%Y-%m-%d %H:%M')}",
             f"{cfg.num_chains} chains x ({cfg.num_burnin} burn-in + {cfg.num_draws} draws), {setting}. "
             f"torch {machine['torch']}, devinterp {machine.get('devinterp')}. fp32 matmul peak "
             f"{peak1:.1f} GFLOP per CPU-second of one core ({ncores}-core peak {ncores * peak1:.0f} GFLOP/s)"
             + (f"; bf16 matmul {machine['bf16_matmul_1core_1024']:.1f} GFLOP/s per core"
                if "bf16_matmul_1core_1024" in machine else "")
             + (f"; bf16: {machine['bf16_reason']}" if "bf16_reason" in machine else "") + ".\n",
             "Ratios: to the mean of the devinterp runs of this command (wall: steps/s; CPU: steps per CPU-second).\n",
             "| round | contestant | SGLD steps/s (wall) | ms/step | × devinterp 1.3.2 | × devinterp 2.0.1 | "
             "steps per CPU-s | × 1.3.2 (CPU) | × 2.0.1 (CPU) | GFLOP/s (wall) | "
             f"% of {ncores}-core fp32 peak (wall) | GFLOP per CPU-s | % of 1-core fp32 peak (CPU) | "
             "λ̂ mean ± s.e. (std) | cpu use | others | notes |",
             "|" + "---|" * 17]
    def base(name, key):
        vals = [x[key] for x in rows if x["name"] == name]
        return float(np.mean(vals)) if vals else None

    def ratio(value, name, key):
        b = base(name, key)
        return f"{value / b:.2f}" if b else "–"

    for r in rows:
        ratio1, ratio2 = ratio(r["steps_per_s"], "devinterp", "steps_per_s"), ratio(r["steps_per_s"], "devinterp2", "steps_per_s")
        cratio1 = ratio(r["steps_per_cpu_s"], "devinterp", "steps_per_cpu_s")
        cratio2 = ratio(r["steps_per_cpu_s"], "devinterp2", "steps_per_cpu_s")
        notes = []
        if r.get("short"):
            notes.append(f"timing only: {r['chains']} chain(s) × {r['chain_steps'] // r['chains']} steps")
        if r.get("compute_dtype") and r["compute_dtype"] != "float32":
            notes.append(r["compute_dtype"])
        if "compile_s" in r:
            notes.append(f"compile {r['compile_s']:.0f}s (not timed)")
        if r.get("flags"):
            notes.append(f"flags {r['flags']}")
        if "init_loss_s" in r:
            notes.append(f"init loss {r['init_loss_s']:.1f}s of it")
        lam = (f"{r['llc_mean']:.1f} ± {r['llc_sem']:.1f} ({r['llc_std']:.1f})" if not r.get("short")
               else f"({r['llc_mean']:.1f})")
        lines.append(f"| {r['round']} | {r['name']} | {r['steps_per_s']:.2f} | {1000 / r['steps_per_s']:.0f} | {ratio1} | "
                     f"{ratio2} | {r['steps_per_cpu_s']:.2f} | {cratio1} | {cratio2} | {r['gflops']:.1f} | "
                     f"{100 * r['gflops'] / (ncores * peak1):.0f}% | {r['gflop_per_cpu_s']:.1f} | "
                     f"{100 * r['gflop_per_cpu_s'] / peak1:.0f}% | {lam} | {100 * r['cpu_use']:.0f}% | "
                     f"{r['others_cores']:.2f} | {'; '.join(notes)} |")
    if max(r["round"] for r in rows) > 1:
        lines += ["", "Per contestant over its runs (ratios of the means):", "",
                  "| contestant | steps/s (wall), each run | mean | × 1.3.2 | × 2.0.1 | steps per CPU-s, each run | mean "
                  "| × 1.3.2 (CPU) | × 2.0.1 (CPU) |", "|" + "---|" * 9]
        for n in dict.fromkeys(r["name"] for r in rows):
            per = ", ".join(f"{r['steps_per_s']:.2f}" for r in rows if r["name"] == n)
            cper = ", ".join(f"{r['steps_per_cpu_s']:.2f}" for r in rows if r["name"] == n)
            m, cm = base(n, "steps_per_s"), base(n, "steps_per_cpu_s")
            lines.append(f"| {n} | {per} | {m:.2f} | {ratio(m, 'devinterp', 'steps_per_s')} | "
                         f"{ratio(m, 'devinterp2', 'steps_per_s')} | {cper} | {cm:.2f} | "
                         f"{ratio(cm, 'devinterp', 'steps_per_cpu_s')} | {ratio(cm, 'devinterp2', 'steps_per_cpu_s')} |")
    for name, p in (prof or {}).items():
        lines += ["", f"Where the time goes in {name}: torch.profiler over {p['steps']} SGLD steps of one chain "
                  f"(self time of aten ops {p['aten_self_s']:.2f} s; wall {p['wall_s']:.2f} s, incl. the paired ℓ(w*) "
                  "forward and profiler overhead): "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["categories"].items()) + ".",
                  "Top ops (self s, calls): " + "; ".join(f"{k} {s:.2f} s ×{c}" for k, s, c in p["top_ops"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
