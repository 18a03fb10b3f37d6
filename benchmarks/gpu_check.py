"""GPU check of the `paper` profile (issue #18): one command on a CUDA machine, under 8 minutes.

    .venv/bin/python benchmarks/gpu_check.py                      # on the GPU (cuda:0)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny  # the same code at tiny shapes (no GPU)

Measures at the `paper` profiles' shapes:

1. LM training — the paper's 2-layer attention-only TransformerLens model (3,355,016 parameters),
   AdamW (lr 1e-3, wd 0.05), batch 100 × context 1024: tokens/s in fp32 (the paper's numerics) and
   under bf16 autocast, each with its memory high-water mark (``torch.cuda.max_memory_allocated``)
   beside the meta-device trace of :mod:`stagewise.plan`;
2. regression-transformer training (51,717 parameters, Adam, batch 256): steps/s;
3. SGLD chain-steps/s of both models at the paper's ε, γ, nβ and batch (LM m = 100, regression
   m = 1024): ours with chains looped and (regression) vmapped, through the loss paths the sweeps
   use (the LM's plain-torch twin; the regression predictions-only loss), against devinterp 1.3.2
   (``pip install devinterp==1.3.2``, the ``bench`` extra; skipped with the reason when absent),
   driven by ``benchmarks/bench_llc.py``;
4. the projected wall time of the whole `paper` profile: :func:`stagewise.plan.calibrate` on this
   device (real steps at the full batch wherever the memory allows), per notebook and in total,
   beside the datasheet model of :func:`stagewise.plan.gpu_model`.

Results are appended to ``benchmarks/results/gpu_check.md`` and written to
``benchmarks/results/gpu_check_<device>[_tiny].json``. Nothing is compiled or cached: run it again
at will. ``--tiny`` shrinks every shape (LM context 64, d_model 64; small batches) and projects the
`smoke` profile instead: a test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


def shapes(tiny: bool) -> dict:
    """The shapes of the check: the paper's, or tiny ones for a CPU test of the script."""
    from stagewise.models.language import LanguageModelConfig
    from stagewise.profiles import get_profile

    lang, reg = get_profile("language", "paper"), get_profile("regression", "paper")
    if tiny:
        return {"lm": LanguageModelConfig(n_layers=2, n_ctx=64, d_model=64, n_heads=4), "lm_batch": 4, "lm_steps": 3,
                "reg_batch": 32, "reg_steps": 5, "lm_sgld": dataclasses.replace(lang.sgld, num_chains=2, num_draws=3,
                                                                                batch_size=4),
                "reg_sgld": dataclasses.replace(reg.sgld, num_chains=2, num_draws=5, num_burnin=2, batch_size=64),
                "profile": "smoke", "lang": lang, "reg": reg}
    return {"lm": lang.model, "lm_batch": lang.batch_size, "lm_steps": 20, "reg_batch": reg.batch_size, "reg_steps": 300,
            "lm_sgld": dataclasses.replace(lang.sgld, num_chains=2, num_draws=30),
            "reg_sgld": dataclasses.replace(reg.sgld, num_chains=4, num_draws=100, num_burnin=20),
            "profile": "paper", "lang": lang, "reg": reg}


def lm_training(cfg, batch: int, steps: int, device: str, dtype: str) -> dict:
    """AdamW steps of the TransformerLens LM at ``batch`` × ``cfg.n_ctx``: tokens/s and peak memory."""
    from stagewise.models.language import lm_loss, make_language_model
    from stagewise.plan import StepSpec, trace_step

    _reset(device)
    torch.manual_seed(0)
    model = make_language_model(cfg, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    tokens = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx), device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        with autocast:
            loss = lm_loss(model, (tokens,)).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _sync(device)
    seconds = time.perf_counter() - t0
    if not all(math.isfinite(float(x)) for x in losses):
        raise FloatingPointError("LM training loss is not finite")
    predicted = trace_step(StepSpec("lm", cfg, "train", optimizer="adamw"), batch).total_bytes
    return {"what": f"LM training, {cfg.n_layers} layers, batch {batch} × {cfg.n_ctx}, {dtype}", "steps": steps,
            "steps_per_s": steps / seconds, "tokens_per_s": steps * batch * cfg.n_ctx / seconds,
            "peak_bytes": _peak(device), "traced_peak_bytes": predicted}


def regression_training(cfg, batch: int, steps: int, device: str) -> dict:
    from stagewise.data.regression import RegressionTask, regression_loss, sample_batch
    from stagewise.models.regression import RegressionTransformer
    from stagewise.plan import StepSpec, trace_step

    _reset(device)
    torch.manual_seed(0)
    model = RegressionTransformer(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    b = sample_batch(RegressionTask(task_size=cfg.task_size, max_examples=cfg.max_examples), batch,
                     torch.Generator().manual_seed(0))
    data = (b.tokens.to(device), b.ys.to(device))

    def step():
        loss = regression_loss(model, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"what": f"regression training, batch {batch}", "steps": steps, "steps_per_s": steps / seconds,
            "tokens_per_s": None, "peak_bytes": _peak(device),
            "traced_peak_bytes": trace_step(StepSpec("regression", cfg, "train"), batch).total_bytes}


def _devinterp_reason() -> str | None:
    try:
        import devinterp  # noqa: F401
    except ImportError as exc:
        return f"devinterp is not installed ({exc}); pip install devinterp==1.3.2 (the 'bench' extra) to compare"
    return None


def sgld_rows(model_kind: str, sh: dict, device: str) -> tuple[list[dict], list[str]]:
    """SGLD chain-steps/s of ours (looped; regression also vmapped) and devinterp on one model."""
    import bench_llc

    from stagewise.data.regression import RegressionTask, regression_loss, sgld_dataset
    from stagewise.llc import estimate_llc_module
    from stagewise.models.regression import RegressionTransformer

    notes = []
    if model_kind == "lm":
        from stagewise.models.language import lm_forward_loss, make_language_model
        from stagewise.models.language_fast import lm_fast_loss, make_fast_language_model

        cfg, sgld = sh["lm"], sh["lm_sgld"]
        torch.manual_seed(0)
        model = make_language_model(cfg, device=device).eval()
        twin = make_fast_language_model(cfg).to(device).eval()
        twin.load_state_dict(model.state_dict())
        data = (torch.randint(0, cfg.d_vocab, (4 * sgld.batch_size, cfg.n_ctx), device=device),)
        contestants = [("ours, TransformerLens, loop", model, lm_forward_loss, "loop", None),
                       ("ours, plain-torch twin (the sweeps' path), loop", twin, lm_fast_loss, "loop", None),
                       ("ours, plain-torch twin, loop, bf16", twin, lm_fast_loss, "loop", "bfloat16")]
        evaluate = bench_llc._evaluate_lm
    else:
        from stagewise.data.regression import regression_prediction_loss

        reg, sgld = sh["reg"], sh["reg_sgld"]
        torch.manual_seed(0)
        model = RegressionTransformer(reg.model).to(device).eval()
        tokens, ys = sgld_dataset(RegressionTask(), 4 * sgld.batch_size)
        data = (tokens.to(device), ys.to(device))
        contestants = [("ours, full loss, loop", model, regression_loss, "loop", None),
                       ("ours, predictions-only loss (the sweeps' path), loop", model, regression_prediction_loss, "loop",
                        None),
                       ("ours, predictions-only loss, vmap", model, regression_prediction_loss, "vmap", None),
                       ("ours, predictions-only loss, vmap, bf16", model, regression_prediction_loss, "vmap",
                        "bfloat16")]
        if device.startswith("cuda"):
            contestants += [("ours, predictions-only loss, vmap + CUDA graph", model, regression_prediction_loss,
                             "vmap+graph", None),
                            ("ours, predictions-only loss, vmap + CUDA graph, bf16", model, regression_prediction_loss,
                             "vmap+graph", "bfloat16")]
        evaluate = bench_llc._evaluate_regression
    rows = []
    eager = {}  # (dtype) -> the vmapped eager run's loss traces, for the graph's agreement
    for name, m, loss, mode, dtype in contestants:
        _reset(device)
        graph = mode.endswith("+graph")
        kw = dict(chain_mode=mode.removesuffix("+graph"), compute_dtype=dtype, cuda_graph=graph, progress=False)
        # a short untimed run first: one-time setup (cuDNN/cuBLAS heuristics, autocast kernels) is not
        # the step's cost (an earlier run timed the bf16 LM twin with cuDNN's first call inside)
        estimate_llc_module(m, loss, data, dataclasses.replace(sgld, num_burnin=0, num_draws=2), **kw)
        res = estimate_llc_module(m, loss, data, sgld, **kw)
        row = {"model": model_kind, "contestant": name, "chain_steps_per_s": sgld.num_chains * sgld.num_steps
               / res.elapsed_s, "llc_mean": res.llc_mean, "llc_std": res.llc_std,
               "flags": res.diagnostics or {}, "peak_bytes": _peak(device)}
        if mode == "vmap":
            eager[dtype] = res
        elif graph and dtype in eager:
            ref = eager[dtype]
            row["graph_vs_vmap"] = {"max_abs_loss_trace_diff": float(abs(res.loss_trace - ref.loss_trace).max()),
                                    "loss_trace_spread": float(ref.loss_trace.std()),
                                    "llc_diff": res.llc_mean - ref.llc_mean}
            notes.append(f"{name}: loss traces against the eager vmap run at the same seed differ by at most "
                         f"{row['graph_vs_vmap']['max_abs_loss_trace_diff']:.3g} (their spread "
                         f"{row['graph_vs_vmap']['loss_trace_spread']:.3g}); λ̂ differs by "
                         f"{row['graph_vs_vmap']['llc_diff']:.3g}")
        rows.append(row)
    reason = _devinterp_reason()
    if reason:
        notes.append(f"{model_kind}: devinterp comparison skipped: {reason}")
    else:
        _reset(device)
        bench_llc.run_devinterp(model, data, dataclasses.replace(sgld, num_burnin=0, num_draws=2), device, evaluate)
        res = bench_llc.run_devinterp(model, data, sgld, device, evaluate)
        rows.append({"model": model_kind, "contestant": "devinterp 1.3.2", "chain_steps_per_s":
                     sgld.num_chains * sgld.num_steps / res["seconds"], "llc_mean": res["llc_mean"],
                     "llc_std": res["llc_std"], "flags": {}, "peak_bytes": _peak(device)})
        base = rows[-1]["chain_steps_per_s"]
        for r in rows:
            r["x_devinterp"] = r["chain_steps_per_s"] / base
    setting = (f"{sgld.num_chains} chains × ({sgld.num_burnin} + {sgld.num_draws}) steps, m = {sgld.batch_size}, "
               f"ε = {sgld.epsilon:g}, γ = {sgld.gamma:g}, nβ = {sgld.nbeta:.3g}")
    for r in rows:
        r["setting"] = setting
    return rows, notes


def projection(profile: str, device: str, tiny: bool) -> tuple[dict, str]:
    """The plan of ``profile`` calibrated by real steps on ``device`` (full batches where they fit),
    beside the datasheet model; returns the plan report and its text."""
    from stagewise import plan as P

    plan = P.plan_profile(profile)
    if device.startswith("cuda"):
        budget = 0.8 * torch.cuda.get_device_properties(0).total_memory
        cal = P.calibrate(plan, device=device, memory_budget=budget, flop_budget=math.inf, repeats=3,
                          progress=lambda m: print(m, flush=True))
    else:
        cal = P.calibrate(plan, device=device, memory_budget=2**28 if tiny else 1.5 * 2**30,
                          flop_budget=2e9 if tiny else 1.5e10, progress=lambda m: print(m, flush=True))
    report = P.plan_report(plan, cal, P.gpu_model(plan, "h100"), P.GPU_CLASSES["h100"])
    return report, P.format_plan(report)


def _fmt_time(seconds: float) -> str:
    from stagewise.plan import _fmt_time as fmt

    return fmt(seconds)


def _gb(b) -> str:
    return "–" if b is None else f"{b / 1e9:.2f} GB"


def markdown(record: dict) -> str:
    lines = [f"\n## GPU check, {record['device_name']} ({record['device']}), {record['date']}"
             + (" — TINY shapes (a test of the script, not a measurement)" if record["tiny"] else ""),
             f"torch {record['torch']}, {record['host']}; wall time {record['wall_seconds']:.0f} s",
             "packages: " + ", ".join(f"{k} {v or 'absent'}" for k, v in record.get("environment", {}).items()) + "\n",
             "| training | steps/s | tokens/s | peak memory (measured) | traced peak (stagewise.plan) |",
             "|---|---|---|---|---|"]
    for r in record["training"]:
        tok = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "–"
        lines.append(f"| {r['what']} | {r['steps_per_s']:.2f} | {tok} | {_gb(r['peak_bytes'])} | "
                     f"{_gb(r['traced_peak_bytes'])} |")
    lines += ["", "| SGLD | contestant | chain-steps/s | × devinterp | λ̂ (std over chains) | peak memory | flags |",
              "|---|---|---|---|---|---|---|"]
    for r in record["sgld"]:
        x = f"{r['x_devinterp']:.2f}" if "x_devinterp" in r else "–"
        lines.append(f"| {r['model']}: {r['setting']} | {r['contestant']} | {r['chain_steps_per_s']:.1f} | {x} | "
                     f"{r['llc_mean']:.2f} ({r['llc_std']:.2f}) | {_gb(r['peak_bytes'])} | {r['flags'] or ''} |")
    lines += ["", "Per-step costs measured here (the calibration behind the projection):", "",
              "| step | batch | s/step | peak memory (measured) | traced peak |", "|---|---|---|---|---|"]
    for st in record["projection"]["steps"]:
        d = next(iter(st["devices"].values()))
        lines.append(f"| {st['step']} | {d['batch']} | {d['seconds']:.4g} | {_gb(d.get('memory_bytes'))} | "
                     f"{_gb(d.get('traced_bytes'))} |")
    proj = record["projection"]
    labels = list(proj["total_seconds"])
    lines += ["", f"Projected wall time of the `{proj['profile']}` profile (notebooks in order, one device):", "",
              "| notebook | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for nb in proj["notebooks"]:
        lines.append(f"| {nb['notebook']} | " + " | ".join(_fmt_time(nb["seconds"][k]) for k in labels) + " |")
    lines.append("| total | " + " | ".join(_fmt_time(proj["total_seconds"][k]) for k in labels) + " |")
    lines += [""] + [f"- {n}" for n in record["notes"]]
    return "\n".join(lines) + "\n"


def environment() -> dict:
    """Versions of the packages the check imports (a missing one is recorded, not fatal)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    for name in ("transformer-lens", "transformers", "datasets", "devinterp", "numpy", "pyarrow", "fsspec"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


class Sections:
    """Runs the check's parts one by one under a wall-clock budget: a part that raises is recorded
    (its error and traceback tail) and the next one runs; parts not started before the budget is
    spent are recorded as skipped. ``save`` is called after every part, so a run killed by its
    lease leaves every finished part on disk."""

    def __init__(self, budget_s: float, save: Callable[[], None]):
        self.t0, self.budget_s, self.save = time.perf_counter(), budget_s, save
        self.log: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        entry = {"section": name, "started_s": round(self.elapsed(), 1)}
        self.log.append(entry)
        if self.elapsed() > self.budget_s:
            entry["status"] = f"skipped: the {self.budget_s:.0f} s budget was spent"
            print(f"[gpu_check] {name}: {entry['status']}", flush=True)
            self.save()
            return None
        print(f"[gpu_check] {name} (at {entry['started_s']:.0f} s)", flush=True)
        try:
            result = fn()
            entry["status"] = "ok"
        except Exception as exc:  # recorded and reported; the other parts still run
            result = None
            entry["status"] = f"error: {type(exc).__name__}: {exc}"[:500]
            entry["traceback"] = traceback.format_exc()[-3000:]
            print(entry["traceback"], flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        entry["seconds"] = round(self.elapsed() - entry["started_s"], 1)
        self.save()
        return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes and the smoke profile (tests the script)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of gpu_check.md / .json")
    ap.add_argument("--no-projection", action="store_true", help="skip the calibrated projection of the profile")
    ap.add_argument("--parts", default="training,sgld,projection",
                    help="comma-separated parts to run (training, sgld, projection)")
    ap.add_argument("--budget-s", type=float, default=math.inf,
                    help="wall-clock seconds after which parts not yet started are skipped (recorded as such)")
    args = ap.parse_args(argv)
    if not args.budget_s > 0:
        ap.error(f"--budget-s must be > 0 seconds, got {args.budget_s}")
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"training", "sgld", "projection"}:
        ap.error(f"--parts must name some of training, sgld, projection, got {args.parts!r}")
    if args.no_projection:
        parts.discard("projection")
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if device == "cpu" and not args.tiny:
        print("note: the paper's shapes on a CPU take hours and may not fit in memory; use --tiny to test the script",
              flush=True)
    sh = shapes(args.tiny)
    record = {"device": device, "tiny": args.tiny, "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else
              (platform.processor() or platform.machine()), "host": f"{platform.node()}, {torch.get_num_threads()} threads",
              "environment": environment(), "training": [], "sgld": [], "notes": [],
              "projection": {"profile": sh["profile"], "steps": [], "notebooks": [], "total_seconds": {}}}
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = device.split(":")[0] + ("_tiny" if args.tiny else "")
    json_path = args.results / f"gpu_check_{suffix}.json"

    def save() -> None:
        record["wall_seconds"] = sections.elapsed()
        record["sections"] = sections.log
        tmp = json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        tmp.replace(json_path)

    sections = Sections(args.budget_s, save)
    print(json.dumps(record["environment"]), flush=True)
    record["notes"].append("SGLD runs at random initialisations (no trained checkpoint is needed for speed): the λ̂ "
                           "values and flags in the SGLD table are not estimates of anything")

    def add_training(r):
        if r is not None:
            record["training"].append(r)
            print(json.dumps(r), flush=True)

    if "training" in parts:
        add_training(sections.run("LM training fp32", lambda: lm_training(sh["lm"], sh["lm_batch"], sh["lm_steps"],
                                                                           device, "float32")))
        if device.startswith("cuda") and torch.cuda.is_bf16_supported() or device == "cpu":
            add_training(sections.run("LM training bf16", lambda: lm_training(sh["lm"], sh["lm_batch"],
                                                                               sh["lm_steps"], device, "bfloat16")))
        add_training(sections.run("regression training", lambda: regression_training(
            sh["reg"].model, sh["reg_batch"], sh["reg_steps"], device)))
    for kind in ("lm", "regression") if "sgld" in parts else ():
        out = sections.run(f"SGLD {kind}", lambda kind=kind: sgld_rows(kind, sh, device))
        if out is not None:
            rows, n = out
            record["sgld"] += rows
            record["notes"] += n
            for r in rows:
                print(json.dumps(r, default=str), flush=True)
    if "projection" in parts:
        out = sections.run("projection", lambda: projection(sh["profile"], device, args.tiny))
        if out is not None:
            report, text = out
            print(text, flush=True)
            record["projection"] = report
            record["notes"] += report.get("notes", [])
    failed = [e for e in sections.log if e["status"] != "ok"]
    record["notes"] += [f"part '{e['section']}' did not finish: {e['status']}" for e in failed]
    save()
    with open(args.results / "gpu_check.md", "a") as fh:
        fh.write(markdown(record))
    print(markdown(record))
    print(f"results: {args.results / 'gpu_check.md'}, {json_path} ({record['wall_seconds']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
