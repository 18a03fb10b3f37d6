"""Training throughput of the attention-only language models (App. D.1) on this machine.

    .venv/bin/python benchmarks/lm_throughput.py [--shapes 2x128x16 2x256x16 2x1024x4] [--steps 10]

Each shape is ``LAYERSxCONTEXTxBATCH``. Times full training steps (forward, backward, AdamW with
the paper's lr / weight decay) on random tokens over the 5,000-token vocabulary and writes
benchmarks/results/lm_throughput.md. The 5k-vocab unembedding dominates at short contexts, the
attention pattern (quadratic in the context) at long ones, so tokens/s depends on the context.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from stagewise.models.language import LanguageModelConfig, lm_loss, make_language_model


def step_rate(n_layers: int, n_ctx: int, batch: int, steps: int, warmup: int = 3, bf16: bool = False,
              device: str = "cpu") -> float:
    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=n_layers, n_ctx=n_ctx), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999))
    tokens = torch.randint(0, 5000, (warmup + steps, batch, n_ctx), device=device)
    for s in range(warmup + steps):
        if s == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = lm_loss(model, (tokens[s],))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["2x128x16", "2x128x32", "2x256x16", "1x256x16", "2x1024x4"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (not what the papers did)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default="", help="results file (default benchmarks/results/lm_throughput*.md)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes:
        n_layers, n_ctx, batch = (int(v) for v in shape.split("x"))
        rate = step_rate(n_layers, n_ctx, batch, args.steps, bf16=args.bf16, device=args.device)
        row = f"| {n_layers} | {n_ctx} | {batch} | {'bf16' if args.bf16 else 'fp32'} | {rate:.2f} | {rate * batch * n_ctx:,.0f} |"
        print(row, flush=True)
        rows.append(row)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / (
        "lm_throughput_bf16.md" if args.bf16 else "lm_throughput.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "# Language-model training throughput (forward + backward + AdamW)\n\n"
        f"{platform.processor() or platform.machine()}, device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end\n\n"
        "| L | context | batch | dtype | steps/s | tokens/s |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
