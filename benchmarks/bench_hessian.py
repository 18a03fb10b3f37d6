"""Cost of the Hessian statistics of Fig. 6b on the regression transformer, in gradient-equivalents.

    .venv/bin/python benchmarks/bench_hessian.py [--batch 1024] [--probes 100] [--tol 1e-3] [--train-steps 0]
        [--chunk 1] [--device cpu|cuda] [--threads N] [--out benchmarks/results/hessian_cost.md]

On the paper's model (51,717 parameters) and a batch of m = 1024 random regression sequences
(D = 4, K = 8, σ² = 0.125), times one gradient (``torch.func.grad``, what an SGLD step costs),
one Hessian-vector product (forward-over-reverse), a Hutchinson trace with ``--probes`` probes and a
top-1 Lanczos eigenvalue to relative residual ``--tol``. ``--train-steps`` first trains the model
with Adam (lr 3e-3, batch 256) so the Hessian is not that of a random initialisation.
Writes benchmarks/results/hessian_cost.md.
"""

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from stagewise.data.regression import RegressionBatches, RegressionTask, regression_loss, sample_batch
from stagewise.hessian import hutchinson_trace, hvp, top_eigenvalues
from stagewise.llc.module import module_loss_fn
from stagewise.models.regression import RegressionTransformer, count_parameters


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--chunk", type=int, default=1, help="Hutchinson probes per vmapped batch")
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hessian_cost.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = RegressionTransformer()
    if args.train_steps:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        data = RegressionBatches(RegressionTask(), 256, seed=0)
        for s in range(args.train_steps):
            loss = regression_loss(model, data(s))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().to(args.device)
    batch = sample_batch(RegressionTask(), args.batch, torch.Generator().manual_seed(1))
    batch = (batch.tokens.to(args.device), batch.ys.to(args.device))
    loss_fn, params = module_loss_fn(model, regression_loss)
    n = count_parameters(model)

    t_grad = timed(lambda: torch.func.grad(loss_fn)(params, batch), args.repeats, args.device)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    t_hvp = timed(lambda: hvp(loss_fn, params, batch, v), args.repeats, args.device)

    def hvp_reverse_over_reverse():  # the alternative to jvp(grad): grad of <grad ℓ, v>
        g = torch.func.grad(loss_fn)
        return torch.func.grad(lambda p: sum((g(p, batch)[k] * v[k]).sum() for k in v))(params)

    t_ror = timed(hvp_reverse_over_reverse, args.repeats, args.device)
    sync(args.device)
    t0 = time.perf_counter()
    trace = hutchinson_trace(loss_fn, params, batch, num_probes=args.probes, seed=0, chunk_size=args.chunk)
    sync(args.device)
    t_trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    eig = top_eigenvalues(loss_fn, params, batch, k=1, tol=args.tol, max_iter=200, seed=0)
    sync(args.device)
    t_eig = time.perf_counter() - t0

    # The paper's regression LLC setting (App. D.3): 10 chains x 5,000 SGLD steps at m = 1024,
    # one gradient each -- computed from the step count, not timed here.
    sgld_grads = 10 * 5000
    rows = [
        ("one gradient (≈ one SGLD step)", t_grad, ""),
        ("one HVP (forward-over-reverse, `hvp`)", t_hvp, ""),
        ("one HVP, reverse-over-reverse (comparison only)", t_ror, ""),
        (f"Hutchinson trace, {args.probes} probes ({args.chunk} per vmap)", t_trace,
         f"tr H = {trace.mean:.4g} ± {trace.stderr:.2g}"),
        (f"top-1 eigenvalue, Lanczos tol {args.tol:g}", t_eig,
         f"λ_max = {eig.top:.4g}, {eig.iterations} iterations, {eig.num_hvps} HVPs, converged={eig.converged}"),
    ]
    state = f"after {args.train_steps} Adam steps" if args.train_steps else "at random initialisation"
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})")
    lines = [
        f"Regression transformer, {n:,} parameters, {state}; batch m = {args.batch}; {where}, "
        f"torch {torch.__version__}.",
        "Medians of "
        f"{args.repeats} calls for the gradient and the HVP; single runs for the trace and the eigenvalue.",
        "",
        "| computation | seconds | gradient-equivalents | result |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {t:.4f} | {t / t_grad:.1f} | {res} |" for name, t, res in rows]
    lines.append(f"| LLC, paper setting (10 chains × 5,000 SGLD steps), not timed | {sgld_grads * t_grad:.0f} "
                 f"(est.) | {sgld_grads:,} | |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
