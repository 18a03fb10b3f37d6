"""Where the paper LM's SGLD step spends its time on a GPU (the `paper` plan's largest item:
notebook 01's LLC sweeps, ≈ 53 ms per chain-step on an H200 in fp32 through the plain-torch twin).

    python benchmarks/pilots/lm_sgld_gpu_profile.py --out $OUT      # on a CUDA machine, ~1 min

At the `paper` shapes (2-layer attention-only LM, context 1024, d_vocab 5000, m = 100, every
position): ms per chain-step of the twin's SGLD step (1 chain, looped, as the sweeps run it) in
fp32, fp32 with TF32 matmuls, and bf16 autocast; then torch.profiler's CUDA kernel table (top 25 by
device time) of a few fp32 and bf16 steps. Writes ``lm_sgld_gpu_profile.json`` and ``.txt`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--draws", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this pilot profiles the GPU step")
    from torch.profiler import ProfilerActivity, profile

    from stagewise.llc import estimate_llc_module
    from stagewise.models.language_fast import lm_fast_loss, make_fast_language_model
    from stagewise.profiles import get_profile

    lang = get_profile("language", "paper")
    torch.manual_seed(0)
    twin = make_fast_language_model(lang.model).to("cuda").eval()
    data = (torch.randint(0, lang.model.d_vocab, (4 * lang.sgld.batch_size, lang.model.n_ctx), device="cuda"),)
    cfg = dataclasses.replace(lang.sgld, num_chains=1, num_burnin=0, num_draws=args.draws)
    args.out.mkdir(parents=True, exist_ok=True)
    record, text = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "setting": f"1 chain x {args.draws} draws, m = {cfg.batch_size}, context {lang.model.n_ctx}"}, []

    def run(dtype, n=args.draws):
        return estimate_llc_module(twin, lm_fast_loss, data, dataclasses.replace(cfg, num_draws=n),
                                   chain_mode="loop", compute_dtype=dtype, progress=False)

    for name, dtype, tf32 in (("fp32", None, False), ("fp32+tf32", None, True), ("bf16", "bfloat16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        run(dtype, 2)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = run(dtype)
        torch.cuda.synchronize()
        record[f"{name}_ms_per_step"] = 1000 * (time.perf_counter() - t0) / args.draws
        record[f"{name}_llc"] = res.llc_mean
        print(name, f"{record[f'{name}_ms_per_step']:.1f} ms/step", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    (args.out / "lm_sgld_gpu_profile.json").write_text(json.dumps(record, indent=1) + "\n")
    for name, dtype in (("fp32", None), ("bf16", "bfloat16")):
        try:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run(dtype, 3)
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25,
                                              max_name_column_width=70)
        except Exception as exc:  # the timings above are already written
            table = f"profiler failed: {type(exc).__name__}: {exc}"
        text += [f"## {name}: 1 chain x 3 draws (each draw: the chain's fwd+bwd and the ℓ(w*) forward)", table]
        print(table, flush=True)
    (args.out / "lm_sgld_gpu_profile.txt").write_text("\n\n".join(text) + "\n")
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
