"""devinterp 2.0.1 contestant of ``bench_llc.py --model lm`` (run in the environment that has it).

devinterp 2.0.1 is an LM-oriented rewrite: ``devinterp.slt.llc.llc(model, dataset, observables, lr=,
n_beta=, localization=, ...)`` samples SGLD chains over an HF ``Dataset`` with an ``input_ids``
column, with a per-token loss (default: cross-entropy of the model's logits; for a HookedTransformer
``model(input_ids, return_type="logits")``), writes every step's per-token losses and input ids to
a zarr store, and computes λ̂ = nβ (mean sampling loss − init loss) from it. ``bench_llc.py`` calls
this script between its other contestants, back to back, with the same weights (a TransformerLens
state dict), the same contexts and the same ε, γ, nβ, chains, draws, burn-in, batch and seed, and
reads the result JSON back. Only the ``llc()`` call is timed (not this interpreter's start-up and
imports, nor building the model and the Dataset). ``num_init_loss_batches=1``: ℓ(w*) from one
batch per chain, C batches in all, as devinterp 1.3.2 does (2.0.1's default is 32 per chain).

    python benchmarks/bench_llc_devinterp2.py --state ckpt.pt --contexts ctx.pt --epsilon 1e-3 \\
        --gamma 100 --nbeta 21.7 --chains 2 --draws 20 --burnin 0 --batch-size 16 --out result.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import busy_cpu_seconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, required=True, help="TransformerLens state dict (torch.save)")
    ap.add_argument("--contexts", type=Path, required=True, help="int64 tensor [N, n_ctx] (torch.save)")
    ap.add_argument("--epsilon", type=float, required=True)
    ap.add_argument("--gamma", type=float, required=True)
    ap.add_argument("--nbeta", type=float, required=True)
    ap.add_argument("--chains", type=int, required=True)
    ap.add_argument("--draws", type=int, required=True)
    ap.add_argument("--burnin", type=int, default=0)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--zarr-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from datasets import Dataset
    from devinterp.slt import sampling
    from devinterp.slt.llc import llc

    from stagewise.models.language import make_language_model
    from stagewise.profiles.language import PROFILES

    model = make_language_model(PROFILES["cpu"].model)
    model.load_state_dict(torch.load(args.state, map_location="cpu"))
    contexts = torch.load(args.contexts)
    if contexts.shape[1] != model.cfg.n_ctx:
        raise ValueError(f"contexts have {contexts.shape[1]} positions, the model's n_ctx is {model.cfg.n_ctx}")
    dataset = Dataset.from_dict({"input_ids": contexts.tolist()}).with_format("torch")

    # the time of the init-loss pass, reported apart (a wrapper; the function itself is unchanged)
    init_time = {"s": 0.0}
    original = sampling._write_init_loss

    def timed_init_loss(*a, **kw):
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            init_time["s"] += time.perf_counter() - t

    sampling._write_init_loss = timed_init_loss
    zarr_dir = args.zarr_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    output = zarr_dir / f"devinterp2_{os.getpid()}.zarr"
    logging.getLogger("devinterp").setLevel(logging.WARNING)
    busy0 = busy_cpu_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = llc(model, dataset, observables={}, lr=args.epsilon, n_beta=args.nbeta, localization=args.gamma,
                  num_chains=args.chains, num_draws=args.draws, num_burnin_steps=args.burnin,
                  batch_size=args.batch_size, num_init_loss_batches=1, init_seed=args.seed, device="cpu",
                  output_path=str(output))
        per_chain = np.asarray(out["llc_per_chain"].values, dtype=np.float64)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    others = (busy_cpu_seconds() - busy0 - cpu) / seconds
    result = {"llc_mean": float(per_chain.mean()),
              "llc_std": float(per_chain.std(ddof=1)) if len(per_chain) > 1 else float("nan"),
              "llc_per_chain": per_chain.tolist(), "seconds": seconds, "cpu_s": cpu, "others_cores": others,
              "init_loss_s": init_time["s"], "devinterp_version": version("devinterp"),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
