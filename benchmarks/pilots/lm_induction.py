"""Pilots for issue #20: when do previous-token and induction heads form in the paper's 2-layer
attention-only LM (App. D.1) trained on a CPU, as a function of batch x context?

    # tokens/s of forward + backward + AdamW on real batches, per shape (BATCHxCONTEXT)
    python benchmarks/pilots/lm_induction.py throughput --shapes 8x256 4x256 4x128 2x128 1x256 --seconds 30

    # one pilot: trains, probes every --log-every steps, stops at formation or --budget-min
    nohup python benchmarks/pilots/lm_induction.py run --name b4c128 --batch 4 --ctx 128 --budget-min 90 \\
        > /work/logs/lm_pilot_b4c128.log 2>&1 &

A pilot uses the library's pieces (model, data stream with optional :class:`RepeatMix`, AdamW and
constant schedule of :class:`TrainConfig`, its autocast for ``--dtype bfloat16``) in a thin loop
that stops to probe. Every ``--log-every`` steps it appends one row to
``benchmarks/results/lm_induction_pilots/<name>.csv`` (flushed, so a killed pilot keeps its log):

* ``train_loss``: mean training loss over the steps since the previous row;
* ``val_loss``, ``icl``: on ``--val-contexts`` fixed validation contexts; ``icl`` is the ICL score
  (App. B.3.3) at :func:`icl_tokens` of the context, each loss averaged over +-5 tokens;
* ``prev0_max`` / ``prev1_max``: largest previous-token score (App. B.4.3) of a layer-0 / layer-1
  head (``--probe-seqs`` sequences of length 16..min(64, ctx));
* ``prefix1_max``: largest prefix-matching score (App. B.4.4) of a layer-1 head;
* ``induction1_max``: largest induction score of a layer-1 head on BOS + R + R repeated random tokens
  (Olsson et al.);
* ``rep_loss1`` / ``rep_loss2`` / ``rep_drop``: mean loss on the first / second copy of R (second
  copy without its first token) and their difference: ~0 without induction, nats with it.

Formation (``formed_step`` in ``<name>.json``): the first of two consecutive rows with
``prefix1_max >= INDUCTION_THRESHOLD`` (0.3, ~28x its uniform-attention level at length 128) and
``rep_drop >= 1`` nat; the pilot stops there. The state (model, optimizer, step, log position) is
saved at every row into the artifact cache (``lm_induction_pilots/<name>/resume.pt``), so running
the same command again continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stagewise.cache import atomic_save, atomic_write_text, cache_dir, load_artifact
from stagewise.data.corpus import CorpusConfig
from stagewise.data.language import ContextCurriculum, LMBatches, RepeatMix, load_contexts
from stagewise.models.language import LanguageModelConfig, lm_loss, make_language_model
from stagewise.probes.language_behaviour import icl_score, icl_tokens, position_losses
from stagewise.probes.language_structure import (
    INDUCTION_THRESHOLD,
    OFFSET_DROP_THRESHOLD,
    PREVIOUS_TOKEN_THRESHOLD,
    induction_circuit_formation,
    induction_scores,
    prefix_matching_scores,
    previous_and_current_token_scores,
    offset_repeat_losses,
    repeated_sequences,
)
from stagewise.train import TrainConfig, _autocast, _make_optimizer

RESULTS = Path(__file__).resolve().parents[1] / "results" / "lm_induction_pilots"
REP_DROP_THRESHOLD = OFFSET_DROP_THRESHOLD  # nats; the same bar for the fixed-offset drop (logged, never decides)
COLUMNS = ["step", "tokens", "epochs", "wall_s", "train_s", "cpu_s", "train_loss", "val_loss", "icl", "prev0_max", "prev0_head",
           "prev1_max", "prefix1_max", "prefix1_head", "prefix0_max", "induction1_max", "induction1_head",
           "rep_loss1", "rep_loss2", "rep_drop", "off_loss1", "off_loss2", "off_drop", "prefix1_short_max",
           "off_drop_short", "probe_s"]
# pilots logged before the random-offset probe existed have no off_* columns
OPTIONAL = ("off_loss1", "off_loss2", "off_drop", "prefix1_short_max", "off_drop_short")


def mix_of(args) -> RepeatMix:
    return RepeatMix(fraction=args.mix, source=args.mix_source, seed=args.data_seed, layout=args.layout,
                     segments=args.segments, min_length=args.seg_min, max_length=args.seg_max,
                     background=args.background, token_pool=args.token_pool, copies=args.copies)


def describe_mix(s: dict) -> str:
    """The table's words for a pilot's data (old summaries lack the layout fields: BOS + S + S)."""
    if not s["mix"]:
        return "none (text)"
    text = f"{1 - s['mix']:.0%} text + " if s["mix"] < 1 else ""
    if s.get("mix_layout", "halves") in (None, "halves"):
        return f"{text}{s['mix']:.0%} BOS+S+S fixed offset, {s['mix_source']} S"
    lo, hi = s["mix_lengths"]
    pool = f" (ids < {s['mix_token_pool']})" if s.get("mix_token_pool") else ""
    bg = f"random tokens{pool}" if s["mix_background"] == "random" else "text"
    copies = s.get("mix_copies", 2)
    where = "anywhere" if s["mix_layout"] == "scatter" else f"within {s['mix_segments']} chunks"
    warm = s.get("warm")
    first = (f"first {warm['steps']:,} steps at context {warm['ctx']} ({warm.get('mix', s['mix']):.0%}: "
             f"{warm['segments']} segment x {warm['copies']} copies of {warm['lengths'][0]}-{warm['lengths'][1]}), then "
             if warm else "")
    return (f"{first}{text}{s['mix']:.0%}: {s['mix_segments']} {s['mix_source']}{pool} segment(s) of {lo}-{hi} tokens x "
            f"{copies} copies {where} at random offsets, in {bg}")


def model_config(ctx: int) -> LanguageModelConfig:
    return LanguageModelConfig(n_layers=2, n_ctx=ctx)  # d_model 256, 8 heads, 5k vocabulary


def train_config(args) -> TrainConfig:
    # the paper's optimiser (App. D.1): AdamW, betas (0.9, 0.999), weight decay 0.05, constant lr
    return TrainConfig(num_steps=args.max_steps, lr=args.lr, optimizer="adamw", weight_decay=0.05,
                       betas=(0.9, 0.999), schedule="constant", checkpoint_every=args.max_steps, seed=args.seed,
                       compute_dtype=args.dtype)


def build_model(ctx: int, seed: int, kind: str):
    """The TransformerLens model (seeded as the library's training loop does), or its plain-torch
    twin (:mod:`stagewise.models.language_fast`) with the very same initial weights."""
    torch.manual_seed(seed)
    tl = make_language_model(model_config(ctx))
    if kind == "tl":
        return tl, tl
    from stagewise.models.language_fast import make_fast_language_model

    fast = make_fast_language_model(model_config(ctx))
    fast.load_state_dict(tl.state_dict(), strict=True)
    return fast, tl


def make_optimizer(model, cfg: TrainConfig, fused: bool):
    """The library's AdamW + constant schedule; ``fused`` swaps torch's foreach AdamW for its fused
    CPU kernel (the same update, other rounding; measured 26 -> 6 ms per step on this model)."""
    opt, sched = _make_optimizer(model, cfg)
    if not fused:
        return opt, sched
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def fast_loss(model, batch):
    from stagewise.models.language import per_token_loss

    tokens = batch[0]
    return per_token_loss(model(tokens), tokens).mean()


# ------------------------------------------------------------------------------------------------ probes


@torch.no_grad()
def probe(model, val: torch.Tensor, probe_seqs: int, seed: int = 0, short: int = 0) -> dict:
    ctx = model.cfg.n_ctx
    model.eval()
    extra = {}
    if short:  # prefix matching and the offset-repeat drop at the curriculum's short length too
        extra["prefix1_short_max"] = float(prefix_matching_scores(model, probe_seqs, length=short, seed=seed + 1)[0][1].max())
        extra["off_drop_short"] = offset_repeat_losses(model, max(8, probe_seqs // 8), length=short,
                                                       segment=min(8, (short - 3) // 2), seed=seed + 3)["drop"]
    prev, _, chance_prev = previous_and_current_token_scores(model, probe_seqs, lengths=(16, min(64, ctx)), seed=seed)
    length = min(128, ctx)
    prefix, _, chance_prefix = prefix_matching_scores(model, probe_seqs, length=length, seed=seed + 1)
    n_rep = max(8, probe_seqs // 8)
    ind, chance_ind = induction_scores(model, n_rep, length=length, seed=seed + 2)
    rep = repeated_sequences(n_rep, model.cfg.d_vocab, model.cfg.d_vocab - 1, length, seed=seed + 2)
    h = (length - 1) // 2
    rep_losses = position_losses(model, rep, batch_size=64)  # column k-1: loss at token k
    rep1 = float(rep_losses[:, 1:h].mean())  # tokens 2..h of the first copy (unpredictable)
    rep2 = float(rep_losses[:, h + 1:2 * h].mean())  # tokens h+2..2h: an induction head can copy them
    off = offset_repeat_losses(model, n_rep, length=length, segment=min(20, (length - 3) // 2), seed=seed + 3)
    losses = position_losses(model, val, batch_size=16)
    k1, k2 = icl_tokens(ctx)
    out = {
        "val_loss": float(losses.mean()), "icl": icl_score(losses=losses, k1=k1, k2=k2, window=5),
        "prev0_max": float(prev[0].max()), "prev0_head": int(prev[0].argmax()), "prev1_max": float(prev[1].max()),
        "prefix1_max": float(prefix[1].max()), "prefix1_head": int(prefix[1].argmax()),
        "prefix0_max": float(prefix[0].max()), "induction1_max": float(ind[1].max()),
        "induction1_head": int(ind[1].argmax()), "rep_loss1": rep1, "rep_loss2": rep2, "rep_drop": rep1 - rep2,
        "off_loss1": off["first"], "off_loss2": off["second"], "off_drop": off["drop"], **extra,
    }
    chance = {"previous_token": chance_prev, "prefix_matching": chance_prefix, "induction": chance_ind,
              "icl_tokens": [k1, k2]}
    return out, chance


# ------------------------------------------------------------------------------------------------ run


def run(args) -> None:
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = RESULTS / f"{args.name}.csv", RESULTS / f"{args.name}.json"
    state_dir = cache_dir() / "lm_induction_pilots" / args.name
    state_dir.mkdir(parents=True, exist_ok=True)
    resume_file = state_dir / "resume.pt"

    corpus = CorpusConfig()
    contexts = load_contexts(corpus, "train", args.ctx)
    corpus_tokens = contexts.shape[0] * (args.ctx - 1)
    mix = mix_of(args)
    batches = LMBatches(contexts, args.batch, args.data_seed, repeat_mix=mix)
    if args.warm_steps:
        # context-length curriculum: the first --warm-steps steps on --warm-ctx-token contexts (as many
        # tokens per step), with their own scatter mix, then the main data
        warm_mix = RepeatMix(fraction=args.mix if args.warm_mix is None else args.warm_mix, source=args.mix_source,
                             seed=args.data_seed, layout="scatter", segments=args.warm_segments, copies=args.warm_copies,
                             min_length=args.warm_seg_min, max_length=args.warm_seg_max, background=args.background,
                             token_pool=args.token_pool)
        batches = ContextCurriculum(args.warm_steps, args.warm_ctx, warm_mix).batches(
            corpus, batches, args.batch * args.ctx, args.data_seed)
    val_all = load_contexts(corpus, "validation", args.ctx)
    pick = torch.randperm(len(val_all), generator=torch.Generator().manual_seed(0))[:args.val_contexts]
    val = val_all[pick].long()

    model, tl = build_model(args.ctx, args.seed, args.model)
    loss_fn = lm_loss if args.model == "tl" else fast_loss
    cfg = train_config(args)
    opt, sched = make_optimizer(model, cfg, args.fused_adamw)
    step, wall0, train_s, cpu_s, formed_run, history = 0, 0.0, 0.0, 0.0, 0, []
    if resume_file.exists():
        state = load_artifact(resume_file)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, wall0, train_s, formed_run = state["step"], state["wall_s"], state["train_s"], state["formed_run"]
        cpu_s = state["cpu_s"]
        print(f"resuming {args.name} at step {step}", flush=True)
    if csv_path.exists() and step > 0:
        with open(csv_path) as fh:
            history = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    fresh = not history
    fh = open(csv_path, "w", newline="")
    writer = csv.DictWriter(fh, fieldnames=COLUMNS)
    writer.writeheader()
    for r in history:
        writer.writerow(r)
    fh.flush()

    meta = {"name": args.name, "batch": args.batch, "ctx": args.ctx, "lr": args.lr, "dtype": args.dtype,
            "model": args.model, "fused_adamw": args.fused_adamw, "seed": args.seed, "data_seed": args.data_seed, "mix": args.mix,
            "mix_source": args.mix_source if args.mix else None, "mix_layout": args.layout if args.mix else None,
            "mix_segments": args.segments, "mix_lengths": [args.seg_min, args.seg_max],
            "mix_background": args.background, "mix_token_pool": args.token_pool, "mix_copies": args.copies,
            "warm": {"steps": args.warm_steps, "ctx": args.warm_ctx, "segments": args.warm_segments,
                     "mix": args.mix if args.warm_mix is None else args.warm_mix,
                     "copies": args.warm_copies, "lengths": [args.warm_seg_min, args.warm_seg_max]}
            if args.warm_steps else None,
            "tokens_per_step": args.batch * args.ctx,
            "corpus_train_tokens": corpus_tokens, "probe_seqs": args.probe_seqs, "val_contexts": args.val_contexts,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "thresholds": {"previous_token": PREVIOUS_TOKEN_THRESHOLD,
                                                      "prefix_matching": INDUCTION_THRESHOLD,
                                                      "rep_drop_nats": REP_DROP_THRESHOLD}}
    t_start = time.perf_counter()
    chance = None

    def log_row(loss_sum: float, loss_n: int) -> dict:
        nonlocal chance
        if args.model != "tl":
            tl.load_state_dict(model.state_dict())
        t = time.perf_counter()
        scores, chance = probe(tl, val, args.probe_seqs, short=args.warm_ctx if args.warm_steps else 0)
        model.train()
        row = {"step": step, "tokens": step * args.batch * args.ctx,
               "epochs": round(step * args.batch * args.ctx / corpus_tokens, 3),
               "wall_s": round(wall0 + time.perf_counter() - t_start, 1), "train_s": round(train_s, 1),
               "cpu_s": round(cpu_s, 1),
               "train_loss": loss_sum / loss_n if loss_n else float("nan"), **scores,
               "probe_s": round(time.perf_counter() - t, 2)}
        writer.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in row.items()})
        fh.flush()
        os.fsync(fh.fileno())
        print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in COLUMNS if k in row),
              flush=True)
        return row

    if fresh:
        log_row(0.0, 0)
    model.train()
    loss_sum, loss_n, stop = 0.0, 0, "max_steps"
    while step < args.max_steps:
        t, c = time.perf_counter(), time.process_time()
        batch = batches(step)
        with _autocast(model, args.dtype):
            loss = loss_fn(model, batch).float()
        if not torch.isfinite(loss):
            stop = f"diverged (loss {loss.item()}) at step {step}"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        train_s += time.perf_counter() - t
        cpu_s += time.process_time() - c
        loss_sum += loss.item()
        loss_n += 1
        if step % args.log_every == 0 or step == args.max_steps:
            row = log_row(loss_sum, loss_n)
            loss_sum, loss_n = 0.0, 0
            formed_now = formed(row)
            formed_run = formed_run + 1 if formed_now else 0
            atomic_save({"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                         "optimizer": opt.state_dict(), "step": step, "wall_s": row["wall_s"],
                         "train_s": train_s, "cpu_s": cpu_s,
                         "formed_run": formed_run}, resume_file)
            write_summary(json_path, csv_path, meta, chance, "running")
            if formed_run >= args.formed_rows:
                stop = "formed"
                break
            if (wall0 + time.perf_counter() - t_start) / 60 >= args.budget_min:
                stop = "budget"
                break
            if args.budget_cpu_min and cpu_s / 60 >= args.budget_cpu_min:
                stop = "cpu budget"
                break
    fh.close()
    atomic_save({k: v.detach().clone() for k, v in model.state_dict().items()}, state_dir / f"final_{step:07d}.pt")
    write_summary(json_path, csv_path, meta, chance, stop)
    print(f"stopped: {stop} at step {step}", flush=True)


def formed(row) -> bool:
    """Both heads of a content-based induction circuit, by the notebooks' thresholds: a layer-0
    previous-token head, a layer-1 prefix-matching head, and a loss drop of >= 1 nat on a repeat
    placed at a random offset (a positional copy head earns the BOS + R + R induction score and
    rep_drop, never this; pilots logged before the probe existed cannot pass)."""
    return (row["prev0_max"] >= PREVIOUS_TOKEN_THRESHOLD and row["prefix1_max"] >= INDUCTION_THRESHOLD
            and (row.get("off_drop") or 0.0) >= OFFSET_DROP_THRESHOLD)


def first_step(rows, test) -> int | None:
    for r in rows:
        if test(r):
            return int(r["step"])
    return None


def read_rows(csv_path: Path) -> list[dict]:
    with open(csv_path) as fh:
        return [{k: (None if v in ("", None) else float(v) if k not in ("step", "tokens", "prev0_head", "prefix1_head",
                                                                       "induction1_head") else int(v))
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def write_summary(json_path: Path, csv_path: Path, meta: dict, chance: dict | None, stop: str) -> None:
    rows = read_rows(csv_path)
    last = rows[-1]
    formation = induction_circuit_formation(
        [r["step"] for r in rows], [r["prev0_max"] for r in rows], [r["prefix1_max"] for r in rows],
        [np.nan if r.get("off_drop") is None else r["off_drop"] for r in rows])
    formed_at = None if formation["formed_step"] is None else int(formation["formed_step"])
    trained = [r for r in rows if r["step"] > 0]
    summary = {
        **meta, "stop": stop, "steps": last["step"], "tokens": last["tokens"], "epochs": last["epochs"],
        "wall_s": last["wall_s"], "train_s": last["train_s"], "cpu_s": last["cpu_s"],
        "tokens_per_s": last["tokens"] / last["train_s"] if last["train_s"] else None,
        "tokens_per_cpu_s": last["tokens"] / last["cpu_s"] if last["cpu_s"] else None,
        "chance": chance,
        "max": {c: max(r[c] for r in rows) for c in ("prev0_max", "prev1_max", "prefix1_max", "prefix0_max",
                                                    "induction1_max", "rep_drop", "off_drop", "prefix1_short_max",
                                                    "off_drop_short")
                if all(r.get(c) is not None for r in rows)},
        "min": {c: min(r[c] for r in trained) if trained else None for c in ("val_loss", "icl")},
        "first_step": {
            "prev0_above_threshold": first_step(rows, lambda r: r["prev0_max"] >= PREVIOUS_TOKEN_THRESHOLD),
            "prefix1_above_threshold": first_step(rows, lambda r: r["prefix1_max"] >= INDUCTION_THRESHOLD),
            "rep_drop_above_threshold": first_step(rows, lambda r: r["rep_drop"] >= REP_DROP_THRESHOLD),
            "off_drop_above_threshold": first_step(rows, lambda r: (r.get("off_drop") or 0) >= REP_DROP_THRESHOLD),
        },
        "formed_step": formed_at,
        "formed_tokens": formed_at * meta["tokens_per_step"] if formed_at is not None else None,
        "law_tokens": law_tokens(meta["batch"], meta["ctx"]),
    }
    atomic_write_text(json_path, json.dumps(summary, indent=1))


def law_tokens(batch: int, ctx: int) -> dict:
    """Aoyama et al. (2025): tokens at induction-head formation grow like sqrt(B C). Calibrated on the
    main paper's onset (0.87B tokens at sqrt(B C) = sqrt(100 x 1024) = 320) and with their own
    fitted constant (N ~ 10^5.7 sqrt(B C))."""
    root = (batch * ctx) ** 0.5
    return {"calibrated_on_paper": 0.87e9 * root / 320, "aoyama_constant": 10 ** 5.7 * root}


# ------------------------------------------------------------------------------------------------ throughput


def throughput(args) -> None:
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "throughput.csv"
    new = not out.exists()
    with open(out, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["shape", "batch", "ctx", "dtype", "model", "fused_adamw", "threads", "steps", "seconds",
                        "steps_per_s", "tokens_per_s", "tokens_per_cpu_s", "load_avg"])
        for shape in args.shapes:
            batch, ctx = (int(v) for v in shape.split("x"))
            model, _ = build_model(ctx, 0, args.model)
            loss_fn = lm_loss if args.model == "tl" else fast_loss
            cfg = TrainConfig(num_steps=10**6, lr=1e-3, optimizer="adamw", weight_decay=0.05, schedule="constant",
                              checkpoint_every=10**6, compute_dtype=args.dtype)
            opt, _ = make_optimizer(model, cfg, args.fused_adamw)
            batches = LMBatches(load_contexts(CorpusConfig(), "train", ctx), batch, 1)
            step, t0 = 0, None
            while True:
                if step == 3:
                    t0, c0 = time.perf_counter(), time.process_time()
                with _autocast(model, args.dtype):
                    loss = loss_fn(model, batches(step)).float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if t0 is not None and time.perf_counter() - t0 >= args.seconds:
                    break
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = step - 3
            row = [shape, batch, ctx, args.dtype, args.model, args.fused_adamw, torch.get_num_threads(), n,
                   round(sec, 1), round(n / sec, 3), round(n * batch * ctx / sec), round(n * batch * ctx / cpu),
                   round(os.getloadavg()[0], 2)]
            w.writerow(row)
            fh.flush()
            print(row, flush=True)


def _at(rows, step, tokens_per_step) -> str:
    """'tokens (wall min)' at a logged step, or '-' when the event never happened."""
    if step is None:
        return "-"
    wall = next(r["wall_s"] for r in rows if r["step"] == step)
    return f"{step * tokens_per_step / 1e6:.2f}M ({wall / 60:.0f} min)"


def table(args) -> None:
    """A markdown table of every pilot's summary (``<name>.json``), for the results file: the data
    recipe, shape, lr, the tokens and wall time at which each probe first crossed its threshold
    (layer-0 previous-token >= 0.4, layer-1 prefix matching >= 0.3, random-offset repeat drop >= 1
    nat; '-' = never), the maxima of every score, and why the pilot stopped."""
    print("| pilot | data | B x C | lr | tokens | wall min | tokens/CPU-s | prev L0 >= 0.4 at | prefix L1 >= 0.3 at "
          "| offset drop >= 1 at | formed (all three) | max prev L0 | max prev L1 | max prefix L1 | max induction L1 "
          "| max fixed-offset drop | max random-offset drop | min ICL | stop |")
    print("|" + "---|" * 19)
    derived = ("stop", "steps", "tokens", "epochs", "wall_s", "train_s", "cpu_s", "tokens_per_s", "tokens_per_cpu_s",
               "chance", "max", "min", "first_step", "formed_step", "formed_tokens", "law_tokens")
    for path in sorted(RESULTS.glob("*.json")):
        s = json.loads(path.read_text())  # recomputed from the CSV (the summary rules may be newer)
        write_summary(path, path.with_suffix(".csv"), {k: v for k, v in s.items() if k not in derived},
                      s["chance"], s["stop"])
        s = json.loads(path.read_text())
        rows = read_rows(path.with_suffix(".csv"))
        m, first, tps = s["max"], s["first_step"], s["tokens_per_step"]
        off = f"{m['off_drop']:.2f}" if "off_drop" in m else "not probed"
        print(f"| {s['name']} | {describe_mix(s)} | {s['batch']} x {s['ctx']} | {s['lr']:g} | {s['tokens'] / 1e6:.2f}M | "
              f"{s['wall_s'] / 60:.0f} | {s['tokens_per_cpu_s']:,.0f} | {_at(rows, first['prev0_above_threshold'], tps)} | "
              f"{_at(rows, first['prefix1_above_threshold'], tps)} | "
              f"{_at(rows, first.get('off_drop_above_threshold'), tps)} | {_at(rows, s['formed_step'], tps)} | "
              f"{m['prev0_max']:.3f} | {m['prev1_max']:.3f} | {m['prefix1_max']:.3f} | {m['induction1_max']:.3f} | "
              f"{m['rep_drop']:.2f} | {off} | {s['min']['icl']:.2f} | {s['stop']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--batch", type=int, required=True)
    r.add_argument("--ctx", type=int, required=True)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--max-steps", type=int, default=1_000_000)
    r.add_argument("--log-every", type=int, default=500)
    r.add_argument("--budget-min", type=float, default=90.0, help="wall-clock budget, probes included")
    r.add_argument("--budget-cpu-min", type=float, default=0.0,
                   help="budget in CPU minutes of training (0: none); independent of other load on the machine")
    r.add_argument("--formed-rows", type=int, default=2, help="consecutive formed rows before stopping")
    r.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    r.add_argument("--model", default="tl", choices=["tl", "fast"], help="train the TransformerLens model or its twin")
    r.add_argument("--mix", type=float, default=0.0, help="RepeatMix fraction of contexts rewritten BOS + S + S")
    r.add_argument("--mix-source", default="natural", choices=["natural", "random", "unigram"])
    r.add_argument("--layout", default="halves", choices=["halves", "segments", "scatter"])
    r.add_argument("--segments", type=int, default=1)
    r.add_argument("--seg-min", type=int, default=8)
    r.add_argument("--seg-max", type=int, default=32)
    r.add_argument("--background", default="natural", choices=["natural", "random"])
    r.add_argument("--token-pool", type=int, default=0, help="random segments from ids [0, N) only (0: all)")
    r.add_argument("--copies", type=int, default=2, help="layout scatter: copies of each segment")
    r.add_argument("--warm-steps", type=int, default=0, help="context curriculum: steps on short contexts first")
    r.add_argument("--warm-ctx", type=int, default=32)
    r.add_argument("--warm-mix", type=float, default=None, help="fraction rewritten in the warm phase (default --mix)")
    r.add_argument("--warm-segments", type=int, default=1)
    r.add_argument("--warm-copies", type=int, default=3)
    r.add_argument("--warm-seg-min", type=int, default=4)
    r.add_argument("--warm-seg-max", type=int, default=8)
    r.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--data-seed", type=int, default=1)
    r.add_argument("--probe-seqs", type=int, default=256)
    r.add_argument("--val-contexts", type=int, default=64)
    r.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("throughput")
    t.add_argument("--shapes", nargs="+", default=["8x256", "4x256", "4x128", "2x128", "1x256"])
    t.add_argument("--seconds", type=float, default=30.0)
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    t.add_argument("--model", default="tl", choices=["tl", "fast"])
    t.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument("--threads", type=int, default=1)
    sub.add_parser("table")
    args = ap.parse_args()
    {"run": run, "throughput": throughput, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
