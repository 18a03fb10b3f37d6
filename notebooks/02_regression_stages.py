# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — Stagewise development in in-context linear regression
#
# Main paper §6 and App. C: a 51,717-parameter transformer trained to do linear regression in
# context passes through five developmental stages LR1–LR5, which the local learning coefficient
# (LLC) finds as plateaus and turning points of λ̂(w_t). The paper then checks each stage against
# the model's behaviour (task prior, in-context learning, out-of-distribution inputs; App. C.3) and
# structure (embedding, LayerNorm and attention collapse; App. C.4).
#
# This notebook trains the model at the chosen profile (cached: a rerun loads the checkpoints, an
# interrupted run resumes), estimates the LLC over training for every seed, detects stages,
# evaluates the App. C probes at the same checkpoints, and asks — by small tested functions, not by
# eye — which of the paper's named stage signatures appear in our run, and when.
#
# *Profile scale.* `paper` is the paper's 500k steps; `cpu` is a shorter one-cycle schedule of the
# same model and batch (10k steps, 5 seeds); `long` trains seed 0 on the paper's own 500k-step
# schedule for the late stages LR3–LR5 (chosen by the pilots in docs/results/pilots.md: about 6 min on
# a GPU, where each step is replayed as a CUDA graph, and about 5 h on a 2-core CPU; resumable);
# `smoke` only exercises the code.

# %% tags=["parameters"]
profile = None  # smoke, cpu, long or paper; None reads STAGEWISE_PROFILE, else cpu
seeds = None  # list of training seeds; None keeps the profile's
num_steps = None  # training steps (a schedule pilot); None keeps the profile's. Another value writes to benchmarks/results/pilots/<profile>-<steps>/
dask_scheduler = None  # Dask scheduler address for the LLC sweeps; None reads $STAGEWISE_DASK_SCHEDULER, else in-process
retrain = False  # True: train even where a run is shipped in data/runs/ (`long`: ~4 h on a CPU core), and check it against the shipped one
residual = None  # "standard" (the paper's text) or "paper_code" (the authors' doubled residual stream); None keeps the profile's

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from stagewise.cluster import sweep_executor
from stagewise.models.regression import RegressionTransformer, count_parameters
from stagewise.plotting import apply_style, pilot_dir, plot_over_training, save_figure, shade_stages
from stagewise.profiles import default_profile, get_profile
from stagewise.runs import regression_run

notebook_start = time.perf_counter()
timings = {}  # seconds per part of the notebook (cached parts load in ~0 s)
profile = profile or default_profile()
llc_executor = sweep_executor(dask_scheduler)  # 'serial', or a Client of that scheduler
base = get_profile("regression", profile)
overrides = {}
if seeds is not None:
    overrides = {"seeds": tuple(seeds), "llc_seeds": tuple(s for s in base.llc_seeds if s in seeds) or (seeds[0],)}
if num_steps is not None and num_steps != base.train.num_steps:
    # same one-cycle schedule, stretched; the run is cached by its training config, so a pilot of
    # benchmarks/pilots/regression_schedule.py at these steps is reused
    overrides["train"] = dataclasses.replace(base.train, num_steps=int(num_steps))
if residual is not None and residual != base.model.residual:
    overrides["model"] = dataclasses.replace(base.model, residual=residual)
cfg = get_profile("regression", profile, **overrides, use_shipped_run=not retrain)
figure_dir = None  # the profile's figures folder
if cfg.model.residual != base.model.residual:
    # another residual than the profile's: its own figures folder, figures/<profile>-<residual>/,
    # and the residual in every title and in the headline JSON through the name
    cfg = dataclasses.replace(cfg, name=f"{profile}-{cfg.model.residual}")
if cfg.train.num_steps != base.train.num_steps:  # a pilot: its own folder under benchmarks/results/pilots
    cfg = dataclasses.replace(cfg, name=f"{profile}-{cfg.train.num_steps}")
    figure_dir = pilot_dir(cfg.name)
figure_setting = cfg.model.setting  # the authors' residual stream is not the paper's text: every figure names it
apply_style()
print(f"profile {cfg.name}: {cfg.train.num_steps:,} steps x batch {cfg.batch_size}, seeds {cfg.seeds}, "
      f"LLC of seeds {cfg.llc_seeds}")
print(f"model parameters: {count_parameters(RegressionTransformer(cfg.model)):,}, residual stream: {cfg.model.residual}")

# %% [markdown]
# ## Training
# Adam, max learning rate 0.003, one-cycle linear schedule with `pct_start` 0.5, no weight decay
# (Table D.2). Checkpoints: 100 linearly + 90 log-spaced steps (the union, deduplicated).

# %%
t0 = time.perf_counter()
runs = {}
for seed in cfg.seeds:
    t1 = time.perf_counter()
    runs[seed] = regression_run(cfg, seed)
    print(f"seed {seed}: {len(runs[seed].checkpoint_steps)} checkpoints, "
          f"final loss {runs[seed].smoothed_loss()[-1]:.4f} ({time.perf_counter() - t1:.0f} s, cached runs load instantly)")
    shipped_from = getattr(runs[seed], "shipped_manifest", None)
    if shipped_from is not None:
        on = shipped_from["trained_on"]
        print(f"  loaded from the shipped run data/runs/{shipped_from['file']} (SHA-256 {shipped_from['sha256'][:12]}..., "
              f"trained on {on['device']} / {on['cpu']}, torch {on['torch']}, {on['threads']} thread(s), "
              f"{on['seconds'] / 3600:.1f} h); retrain=True trains it here instead")
timings["training"] = time.perf_counter() - t0

# %% [markdown]
# ## Training loss of every seed (cf. Fig. B.1b, loss panel)
# The loss is smoothed by a moving average over 1% of the run. The dashed lines are two reference
# levels: the loss of always predicting 0 (E[y²] = D + σ²) and the Bayes-optimal loss of ridge
# regression averaged over k (computed on the evaluation set).

# %%
from stagewise.data.regression import sample_batch
from stagewise.ridge import ridge_predict

gen = torch.Generator().manual_seed(12345)
evalb = sample_batch(cfg.task, cfg.num_eval, gen)
zero_loss = float((evalb.ys**2).mean())
ridge_loss = float(((ridge_predict(evalb.xs, evalb.ys, cfg.task.noise_variance) - evalb.ys) ** 2).mean())
print(f"reference losses: predict 0 = {zero_loss:.3f}, ridge (Bayes-optimal) = {ridge_loss:.3f}")

fig, ax = plt.subplots(figsize=(6, 3.2))
for seed, run in runs.items():
    steps = np.arange(1, len(run.train_loss) + 1)
    ax.plot(steps, run.smoothed_loss(), lw=1, label=f"seed {seed}")
ax.axhline(zero_loss, ls="--", color="grey", lw=0.8, label="predict 0")
ax.axhline(ridge_loss, ls=":", color="k", lw=0.8, label="ridge (optimal)")
ax.set(xscale="log", yscale="log", xlabel="training step $t$", ylabel="training loss (MSE, smoothed)",
       title=f"Training loss of every seed against two reference losses ({cfg.name} profile)")
ax.legend(ncol=2)
save_figure(fig, "figB1b_regression_loss", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ## LLC over training and automatic stages (Fig. 1b / C.1)
# SGLD at the paper's ε = 3·10⁻⁴, β̃ = γ̃ = 0.01 (App. D.2.4; nβ = γ = 66.7), with the profile's
# number of chains, draws and batch size, on a fixed SGLD data set; the same seed (noise and
# batches) at every checkpoint. Every estimate is cached per checkpoint. Chains flagged as
# diverging or NaN are reported below and excluded from the mean, never averaged in.
#
# The first LLC seed gets the profile's full sweep (Fig. 1b); the other seeds (Fig. B.1b) may get
# fewer checkpoints or chains to fit the profile's budget (`other_seeds_*` in the profile).

# %%
from stagewise.plotting import plot_stages
from stagewise.runs import regression_llc
from stagewise.stages import detect_stages

t0 = time.perf_counter()
sweeps = {}
for seed in cfg.llc_seeds:
    t1 = time.perf_counter()
    llc_cfg = cfg.llc_profile(seed)
    sweeps[seed] = sweep = regression_llc(llc_cfg, seed, executor=llc_executor)
    print(f"seed {seed}: LLC at {len(sweep.steps)} checkpoints, {llc_cfg.sgld.num_chains} chains x "
          f"({llc_cfg.sgld.num_burnin} + {llc_cfg.sgld.num_draws}) steps, in {time.perf_counter() - t1:.0f} s "
          f"(cached estimates load instantly); flagged chains: {sweep.diagnostics or 'none'}")
timings["LLC"] = time.perf_counter() - t0

# %% [markdown]
# Stages per seed. Choice (stated, since App. A.5 does not cover it): the LLC is flat from
# initialisation until the task-prior stage ends, so we let that initial plateau be a stage of its
# own (`edge_plateaus=True`); the bare rule only places boundaries between two periods of change.
# Both are printed for the first seed. A checkpoint whose chains were all flagged has no estimate
# (NaN); it is left out of the stage detection and named here.

# %%
stage_results = {}
for seed, sweep in sweeps.items():
    keep = (sweep.steps > 0) & np.isfinite(sweep.llc_mean)  # log-step axis; no estimate where every chain failed
    if not np.all(np.isfinite(sweep.llc_mean)):
        print(f"seed {seed}: no LLC estimate at steps {sweep.steps[~np.isfinite(sweep.llc_mean)].tolist()}")
    sem = sweep.llc_sem[keep] if cfg.llc_profile(seed).sgld.num_chains > 1 else None
    stage_results[seed] = detect_stages(sweep.steps[keep], sweep.llc_mean[keep], stds=sem, edge_plateaus=True)

seed0 = cfg.llc_seeds[0]
sweep = sweeps[seed0]
keep = (sweep.steps > 0) & np.isfinite(sweep.llc_mean)
steps_llc = sweep.steps[keep]
norms = np.array([torch.cat([p.flatten() for p in runs[seed0].load_state(s).values()]).norm().item() for s in steps_llc])
result = stage_results[seed0]
bare = detect_stages(steps_llc, sweep.llc_mean[keep], stds=sweep.llc_sem[keep] if cfg.sgld.num_chains > 1 else None)
print("boundaries with edge plateaus:", np.round(result.boundaries).astype(int).tolist(),
      "| bare App. A.5 rule:", np.round(bare.boundaries).astype(int).tolist())
fig = plot_stages(result, steps_llc, sweep.llc_mean[keep], stds=sweep.llc_std[keep] if cfg.sgld.num_chains > 1 else None,
                  loss=sweep.loss_init[keep], extra={"weight norm $\\|w_t\\|$": norms},
                  loss_label="test loss $\\ell(w_t)$ (MSE)",
                  title=f"Regression transformer, {cfg.name} profile, seed {seed0}")
save_figure(fig, "fig1b_regression_llc", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()
result.summary()

# %% [markdown]
# ## Every seed (Fig. B.1b)
# Loss (top) and LLC (bottom) of each seed, each shaded by its own detected stages. The paper finds
# "remarkably little variance across different seeds".

# %%
fig, axes = plt.subplots(2, len(sweeps), figsize=(2.7 * len(sweeps) + 0.6, 4.4), squeeze=False, sharey="row")
for col, (seed, sweep) in enumerate(sweeps.items()):
    res = stage_results[seed]
    run = runs[seed]
    t = np.arange(1, len(run.train_loss) + 1)
    plot_over_training(axes[0, col], t, {"train loss": run.smoothed_loss()}, res, yscale="log", color="k",
                       legend=False, label_stages=True, ylabel="training loss" if col == 0 else None)
    axes[0, col].set_title(f"seed {seed}: training loss (MSE)", pad=12)
    plot_over_training(axes[1, col], sweep.steps, {"LLC": sweep.llc_mean}, res, color="k", marker=".", ms=3, lw=0.6,
                       legend=False, ylabel=r"LLC $\hat\lambda(w_t)$" if col == 0 else None)
    axes[1, col].plot(res.steps, res.smoothed, color="tab:red", ls=":", lw=1.2)
    axes[1, col].set_title(f"seed {seed}: LLC and its GP fit")
    axes[0, col].set_xlabel("")
fig.suptitle(f"Loss and LLC of every seed ({cfg.name} profile); dotted: GP fit; dashed: detected boundaries")
fig.tight_layout()
save_figure(fig, "figB1b_regression_llc", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### Detected boundaries against the paper's
# Our stages are named after the paper's by their order and LLC direction (`align_stages`: the
# paper's sequence is LR1–LR2 ↑, LR3–LR4 ↓, LR5 ↑; a stage that merges two of the paper's is named
# e.g. `LR3+LR4`, and the boundary between them is then *not resolved*). The paper's boundaries
# (1k / 40k / 126k / 320k of 500k steps) are also shown rescaled linearly to this profile's run
# length — a naive guide, since a shorter one-cycle schedule compresses stages by different factors.

# %%
from stagewise.probes.regression_signatures import align_stages, boundary_table

labels, tables = {}, []
for seed, res in stage_results.items():
    labels[seed] = align_stages(res.stages)
    names = ["+".join(lab) for lab in labels[seed]] if labels[seed] else None
    print(f"seed {seed}: boundaries {np.round(res.boundaries).astype(int).tolist()}, "
          f"stage directions {[st.direction[:3] for st in res.stages]} -> {names or 'no match with the paper'}")
    if labels[seed] is not None:
        tables.append(boundary_table(res.boundaries, res.intervals, labels[seed], cfg.train.num_steps).assign(seed=seed))
if tables:
    boundaries_vs_paper = pd.concat(tables).pivot(index=["boundary", "paper", "rescaled"], columns="seed",
                                                  values="detected").round(0)
    boundaries_vs_paper.columns = [f"seed {s}" for s in boundaries_vs_paper.columns]
else:
    boundaries_vs_paper = pd.DataFrame()
boundaries_vs_paper

# %% [markdown]
# ### Fewer LLC checkpoints: what the detector resolves at 60 instead of 190
# With more than 60 LLC checkpoints (`long`: the paper's 190), the same estimates at the 60
# checkpoints an earlier `long` profile used (a subset: each estimate is cached per checkpoint)
# give the boundaries below: how much the count of checkpoints matters to the detector
# (`benchmarks/stage_detection_accuracy.py` measures it on synthetic curves).

# %%
from stagewise.train import analysis_steps

boundaries_60 = None
if len(sweeps[seed0].steps) > 60:
    sub = np.isin(sweep.steps, analysis_steps(runs[seed0].checkpoint_steps, 60)) & keep
    res60 = detect_stages(sweep.steps[sub], sweep.llc_mean[sub], stds=sweep.llc_sem[sub], edge_plateaus=True)
    boundaries_60 = res60.boundaries
    print(f"seed {seed0}: boundaries at {len(steps_llc)} checkpoints {np.round(result.boundaries).astype(int).tolist()} "
          f"({[st.direction[:3] for st in result.stages]}); at 60 of them "
          f"{np.round(res60.boundaries).astype(int).tolist()} ({[st.direction[:3] for st in res60.stages]})")
else:
    print(f"{len(sweeps[seed0].steps)} LLC checkpoints: no subset to compare")

# %% [markdown]
# ## Essential dynamics: forms against the LLC's boundaries ([DL] §3.2, Fig. 2)
# The papers' second witness of stages. *Behavioural ED*: the predictions ŷ_k of every
# checkpoint on 256 fixed sequences (2,048 numbers; eq. 7 of [DL]), PCA over the checkpoints of one
# seed, the top 3 PCs smoothed along training, and the trajectory's geometry in each PC plane:
# osculating circles (grey), their centres (the evolute, black), vertices. A *form* is a turning
# point of the trajectory at which every PC plane has a vertex (cusp of the evolute).
#
# *Our choices* (the papers' App. B.8 is not in our sources; `stagewise.essential_dynamics`'
# docstring gives the reasons): the trajectory is parametrised by log(step + 1), the axis of the
# LLC's stages, and smoothed by a local-linear Gaussian kernel of 0.1 decade (which averages the
# crowded late checkpoints instead of reading their noise as turns); a turning point counts when
# the chords 0.3 decade (a factor 2 in steps) into and out of it make ≥ 30° and are each ≥ 10
# standard errors of the smoothed curve long. These settings were fixed on synthetic trajectories
# before any run's forms were looked at and are the same for every seed and profile. A form
# *corroborates* an LLC boundary when it lies within a factor 1.5 of it in steps (notebook 05's
# rule for curvature boundaries).

# %%
from stagewise.essential_dynamics import essential_dynamics, forms_against_boundaries
from stagewise.plotting import plot_ed_over_training, plot_essential_dynamics
from stagewise.runs import regression_outputs

t0 = time.perf_counter()
eds = {}
for seed in cfg.seeds:
    ed_steps, ed_outputs = regression_outputs(cfg, seed)
    eds[seed] = essential_dynamics(ed_outputs, ed_steps)
timings["essential dynamics"] = time.perf_counter() - t0
ed_rows = []
for seed, ed in eds.items():
    bounds = stage_results[seed].boundaries if seed in stage_results else []
    matches = forms_against_boundaries([f.step for f in ed.forms], bounds) if len(bounds) else []
    ed_rows.append({"seed": seed, "explained variance (PC1-3)": np.round(ed.pca.explained_variance_ratio, 3).tolist(),
                    "forms (step, turn)": [(round(f.step), round(f.turn)) for f in ed.forms],
                    "LLC boundaries": np.round(bounds).astype(int).tolist(),
                    "corroborated": [round(m["boundary"]) for m in matches if m["corroborated"]],
                    "not corroborated": [round(m["boundary"]) for m in matches if not m["corroborated"]]})
ed_table = pd.DataFrame(ed_rows).set_index("seed")
ed_table

# %%
ed0 = eds[seed0]
fig = plot_essential_dynamics(ed0, stages=result,
                              title=f"Essential dynamics of seed {seed0} ({cfg.name} profile): the trajectory in "
                                    f"its top 3 PCs, coloured by the LLC's stages; stars: forms")
save_figure(fig, "fig2b_regression_essential_dynamics", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()
fig = plot_ed_over_training(ed0, stages=result, label=f"seed {seed0}: ",
                            title=f"Essential dynamics over training against the LLC's stages ({cfg.name} profile)")
save_figure(fig, "fig2b_regression_ed_over_training", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# Every seed's turn profile, shaded by its own LLC stages (seeds after the first have their LLC at
# fewer checkpoints: `other_seeds_*` in the profile).

# %%
if len(eds) > 1:
    fig, axes = plt.subplots(2, len(eds), figsize=(3.0 * len(eds) + 0.6, 4.6), squeeze=False, sharex=True)
    for col, (seed, ed) in enumerate(eds.items()):
        plot_ed_over_training(ed, stages=stage_results.get(seed), axes=axes[:, col], label=f"seed {seed}: ",
                              compact=True)
        for ax in axes[:, col]:
            ax.title.set_fontsize(8)
    fig.suptitle(f"Essential dynamics of every seed ({cfg.name} profile): PC scores (top), turns and forms (bottom)")
    fig.tight_layout()
    save_figure(fig, "figB1b_regression_ed_over_training", profile=cfg.name, directory=figure_dir, setting=figure_setting)
    plt.show()

# %% [markdown]
# In plain words, for the first seed: which LLC boundary a form corroborates, which it does not,
# and whether a form lies at or near the paper's LR3|LR4 boundary (126k of 500k steps; only a run
# of the paper's length can say).

# %%
def ed_verdict(ed, res, num_steps):
    matches = forms_against_boundaries([f.step for f in ed.forms], res.boundaries) if len(res.boundaries) else []
    lines = [f"{len(ed.forms)} form(s) at steps {[round(f.step) for f in ed.forms]}; "
             f"PCA explains {ed.pca.explained_variance_ratio.sum():.0%} "
             f"({', '.join(f'{v:.0%}' for v in ed.pca.explained_variance_ratio)})"]
    for m in matches:
        near = "no form" if m["nearest_form"] is None else f"nearest form {m['nearest_form']:,.0f} (x{m['ratio']:.2f})"
        lines.append(f"LLC boundary {m['boundary']:,.0f}: {near} -> {'corroborated' if m['corroborated'] else 'not corroborated'}")
    if num_steps == 500_000:
        near = [f for f in ed.forms if abs(np.log(f.step / 126_000)) <= np.log(1.5)]
        lines.append("paper's LR3|LR4 (126k): " + (f"form(s) at {[round(f.step) for f in near]}" if near
                                                      else "no form within a factor 1.5"))
    return lines


print("\n".join(ed_verdict(ed0, result, cfg.train.num_steps)))

# %% [markdown]
# ## Probes over training (App. C.3–C.4)
# Every probe runs on one fixed evaluation batch at the first LLC seed's checkpoints (the same for
# every seed: the checkpoint schedule depends only on the number of steps), cached per checkpoint.
# The task prior here is t ~ N(0, I), so its mean t̄ is 0 and the task-prior prediction t̄ᵀx is
# the zero prediction (the paper's C.2 distinction matters for a finite task set).

# %%
from stagewise.probes.regression import RidgePredictor, behaviour_summary
from stagewise.runs import regression_probe_batch, regression_probes

t0 = time.perf_counter()
probe_tables = {}
for seed in cfg.seeds:
    t1 = time.perf_counter()
    probe_tables[seed] = regression_probes(cfg, seed)
    print(f"seed {seed}: {len(probe_tables[seed])} checkpoints x {probe_tables[seed].shape[1] - 1} probe columns "
          f"in {time.perf_counter() - t1:.1f} s (cached rows load instantly)")
timings["probes"] = time.perf_counter() - t0
probes = probe_tables[seed0]
ps = probes.step.to_numpy()
ridge = behaviour_summary(RidgePredictor(cfg.task.noise_variance), regression_probe_batch(cfg), cfg.task.noise_variance)
print("ridge on the probe batch:", {k: round(v, 3) for k, v in ridge.items()})
seed_colors = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(cfg.seeds)}

# %% [markdown]
# ### Task prior (C.2; Fig. 6a top)
# The paper: during LR1 the model learns to predict with the task prior (ŷ ≈ t̄ᵀx = 0); E[ŷ²]
# falls to a minimum of about 0.1 (< σ² = 0.125) just after LR1, then grows again as the model
# learns in context.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for seed, tab in probe_tables.items():
    lw, alpha = (1.6, 1.0) if seed == seed0 else (0.8, 0.6)
    for ax, col in zip(axes, ("behaviour.distance_to_zero", "behaviour.distance_to_task_prior")):
        plot_over_training(ax, tab.step, {f"seed {seed}": tab[col]}, stage_results[seed0] if seed == seed0 else None,
                           yscale="log", colors=[seed_colors[seed]], lw=lw, alpha=alpha, legend=False)
for ax, title in zip(axes, (r"distance to the zero prediction $E[\hat y^2]$",
                            r"distance to the task prior $E[(\hat y - \bar t^\top x)^2]$")):
    ax.axhline(cfg.task.noise_variance, color="k", ls=":", lw=0.8, label=r"$\sigma^2$")
    ax.axhline(0.1, color="tab:red", ls="--", lw=0.8, label="paper's minimum 0.1")
    ax.set(title=title, ylabel="mean square")
axes[0].legend(loc="upper left", ncol=2)
same = r"; $\bar t = 0$, so both panels show the same curves" if cfg.task.num_tasks is None else ""
fig.suptitle(f"Task prior (C.2), shaded by seed {seed0}'s LLC stages{same}", y=1.0)
fig.tight_layout()
save_figure(fig, "figC2_regression_task_prior", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### ICL scores (C.3)
# ICL_{1:D} = ℓ₁ − ℓ_D (locating the task) and ICL_{D:K} = ℓ_D − ℓ_K (refining it), positive when
# later predictions are better. The paper: ICL emerges in the first half of LR2; early in LR2 the
# model temporarily gets *worse* at late tokens (ICL_{D:K} dips); ICL_{D:K} then stabilises while
# ICL_{1:D} keeps improving. Dashed: ridge regression (Bayes-optimal).

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, key, title in zip(axes, ("icl_1_D", "icl_D_K"), ("locating the task: $ICL_{1:D} = \\ell_1 - \\ell_D$",
                                                               "refining it: $ICL_{D:K} = \\ell_D - \\ell_K$")):
    for seed, tab in probe_tables.items():
        lw, alpha = (1.6, 1.0) if seed == seed0 else (0.8, 0.6)
        plot_over_training(ax, tab.step, {f"seed {seed}": tab[f"behaviour.{key}"]},
                           stage_results[seed0] if seed == seed0 else None, colors=[seed_colors[seed]], lw=lw,
                           alpha=alpha, legend=False)
    ax.axhline(ridge[key], color="k", ls="--", lw=0.8, label="ridge")
    ax.axhline(0, color="0.3", lw=0.5)
    ax.set(title=title, ylabel="loss difference (MSE)")
axes[0].legend(loc="best", ncol=2)
fig.suptitle(f"ICL scores (C.3), shaded by seed {seed0}'s LLC stages", y=1.03)
save_figure(fig, "figC3_regression_icl_scores", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### Out-of-distribution inputs and tasks (C.4; Fig. 6a bottom)
# Inputs x ~ N(0, gI) (eq. 14) or tasks t ~ N(0, gI) (eq. 15), same sequences rescaled at every
# checkpoint. The normalised loss is the loss divided by that of the task-prior prediction on the
# same OOD batch (1 = no better than predicting t̄ᵀx = 0; see the probe's docstring for why not
# loss/g² as printed in Fig. C.4). The paper: on extreme inputs the model first improves, then
# worsens during LR3; on OOD tasks it keeps improving.

# %%
gains = sorted({float(c.removeprefix("ood.inputs.g=").rsplit(".", 1)[0]) for c in probes.columns
                if c.startswith("ood.inputs.g=")})
gain_colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(gains)))
fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True)
for j, kind in enumerate(("inputs", "tasks")):
    for i, (metric, ylabel, what) in enumerate((("normalised_loss", "loss / task-prior loss (ratio)", "normalised loss"),
                                                ("mean_abs_prediction", r"mean $|\hat y|$", "prediction size"))):
        curves = {f"g = {g:g}": probes[f"ood.{kind}.g={g:g}.{metric}"] for g in gains}
        plot_over_training(axes[i, j], ps, curves, result, colors=gain_colors, yscale="log", ylabel=ylabel,
                           legend=(i == 0))
        axes[i, j].set_title(f"OOD {kind} ({'x' if kind == 'inputs' else 't'} ~ N(0, gI)): {what}",
                             pad=12 if i == 0 else 4)
for ax in axes[0]:
    ax.set_xlabel("")
fig.suptitle(f"OOD generalisation (C.4), seed {seed0}", y=1.0)
fig.tight_layout()
save_figure(fig, "figC4_regression_ood", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### Embeddings (C.5)
# (a) the D + 1 singular values of the token embedding W_E (the paper: one partially collapses at the
# end of LR2, its share of variance falling from ~3% to half that); (b) the singular values of the
# positional embedding (a similar collapse in LR2–LR3); (c) mean cosine between each token-embedding
# direction and its projection on the subspace read by the unembedding / spanned by the positional
# embedding (the paper: they align).

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
emb = {f"$\\sigma_{i + 1}$": probes[f"embedding.sv{i}"] for i in range(cfg.task.task_size + 1)}
plot_over_training(axes[0], ps, emb, result, yscale="log", ylabel="singular value", label_stages=True)
axes[0].set_title("(a) token embedding $W_E$", pad=12)
ax2 = axes[0].twinx()
ax2.plot(ps[ps > 0], probes["embedding.min_variance_fraction"][ps > 0], color="tab:red", ls="--", lw=1)
ax2.set_ylabel("smallest's variance share (dashed)", color="tab:red")
pos_cols = [c for c in probes.columns if c.startswith("positional.sv")]
plot_over_training(axes[1], ps, {c: probes[c] for c in pos_cols}, result, yscale="log", legend=False,
                   colors=plt.get_cmap("viridis")(np.linspace(0, 0.9, len(pos_cols))), ylabel="singular value",
                   label_stages=True)
axes[1].set_title(f"(b) positional embedding (eff. rank {probes['positional.effective_rank'].iloc[0]:.1f}"
                  f" → {probes['positional.effective_rank'].iloc[-1]:.1f})", pad=12)
plot_over_training(axes[2], ps, {"unembedding subspace": probes["alignment.unembedding"],
                                 "positional subspace": probes["alignment.positional"]}, result,
                   ylabel="mean cosine", label_stages=True)
axes[2].set_title("(c) token embedding's alignment with two subspaces", pad=12)
fig.suptitle(f"Embedding collapse and alignment (C.5), seed {seed0}", y=1.05)
fig.tight_layout()
save_figure(fig, "figC5_regression_embeddings", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### Unembedding collapse (C.6)
# Every component of the final LayerNorm weight γ and bias β, of the y read-out row (W_U)₀ and of the
# effective weight W̃_U = (W_U)₀ ⊙ γ over training, and the fractions below 0.1 in magnitude. The
# paper: in LR3 most of them collapse to zero, so the prediction is read from a handful of residual
# directions.

# %%
from stagewise.probes.regression import unembedding_weights, weights_over_training


def _unembedding_vectors(model):
    u = unembedding_weights(model)
    return {"gamma": u.ln_weight, "beta": u.ln_bias, "readout": u.readout_weight, "effective": u.effective_weight}


vectors = weights_over_training(runs[seed0].load_model, ps, _unembedding_vectors)
fig, axes = plt.subplots(2, 3, figsize=(12, 5.4), sharex=True)
for ax, key, title in zip(axes.flat, ("gamma", "readout", "effective", "beta"),
                          (r"final LN weight $\gamma$", r"read-out $(W_U)_{0,:}$",
                           r"effective $\tilde W_U = (W_U)_{0,:}\odot\gamma$", r"final LN bias $\beta$")):
    v = vectors[key].numpy()
    plot_over_training(ax, ps, {str(i): v[:, i] for i in range(v.shape[1])}, result, legend=False, color="0.2",
                       lw=0.4, alpha=0.6, label_stages=True)
    ax.plot(ps[ps > 0], v.mean(axis=1)[ps > 0], color="tab:red", lw=1.2)
    ax.set_title(title + " (red: mean)", pad=12)
    ax.set_ylabel("component value")
plot_over_training(axes[1, 1], ps, {r"$\gamma$": probes["unembedding.frac_small_ln_weight"],
                                    r"$(W_U)_0$": probes["unembedding.frac_small_readout"],
                                    r"$\tilde W_U$": probes["unembedding.frac_small_effective"]}, result,
                   ylabel="fraction |w| < 0.1", label_stages=True)
axes[1, 1].set_title("fraction of small weights", pad=12)
plot_over_training(axes[1, 2], ps, {r"$\|\gamma\|$": probes["unembedding.ln_weight_norm"],
                                    r"$\|(W_U)_0\|$": probes["unembedding.readout_norm"],
                                    r"$\|\tilde W_U\|$": probes["unembedding.effective_norm"]}, result,
                   yscale="log", ylabel="norm", label_stages=True)
axes[1, 2].set_title("norms of the three vectors", pad=12)
for ax in axes[0]:
    ax.set_xlabel("")
fig.suptitle(f"Unembedding collapse (C.6), seed {seed0}", y=1.02)
fig.tight_layout()
save_figure(fig, "figC6_regression_unembedding", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### LayerNorm collapse (C.7; Fig. 6b top)
# Weights γ (top) and biases β (middle) of every LayerNorm, and (bottom) the fraction of weights
# below 0.1, the weights' and biases' spread. The paper: after LR3 the collapse spreads from the
# unembedding to earlier LayerNorms, most of all the first pre-attention one, and the biases'
# variance grows while their mean stays near 0.

# %%
ln_names = [name for name, m in runs[seed0].load_model(int(ps[-1])).named_modules() if isinstance(m, torch.nn.LayerNorm)]


def _layer_norm_vectors(model):
    modules = dict(model.named_modules())
    return {**{f"{n}.weight": modules[n].weight for n in ln_names}, **{f"{n}.bias": modules[n].bias for n in ln_names}}


ln_vectors = weights_over_training(runs[seed0].load_model, ps, _layer_norm_vectors)
fig, axes = plt.subplots(3, len(ln_names), figsize=(2.6 * len(ln_names), 7), sharex=True, squeeze=False)
for j, name in enumerate(ln_names):
    for i, part in enumerate(("weight", "bias")):
        v = ln_vectors[f"{name}.{part}"].numpy()
        plot_over_training(axes[i, j], ps, {str(k): v[:, k] for k in range(v.shape[1])}, result, legend=False,
                           color="0.2", lw=0.4, alpha=0.6, label_stages=(i == 0))
        axes[i, j].set_ylabel(r"weight $\gamma_k$" if part == "weight" else r"bias $\beta_k$")
        axes[i, j].set_title(f"{name}: every {part}", pad=12 if i == 0 else 4, fontsize=9)
    plot_over_training(axes[2, j], ps, {"frac |γ| < 0.1": probes[f"layer_norm.{name}.frac_small_weight"],
                                        "std γ": probes[f"layer_norm.{name}.weight_std"],
                                        "std β": probes[f"layer_norm.{name}.bias_std"]}, result,
                       legend=(j == 0), ylabel="fraction / std")
    axes[2, j].set_title(f"{name}: collapse measures", fontsize=9)
for ax in axes[:-1].flat:
    ax.set_xlabel("")
fig.suptitle(f"LayerNorm collapse (C.7), seed {seed0}", y=1.01)
fig.tight_layout()
save_figure(fig, "figC7_regression_layer_norms", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ### Attention entropy and variability per head (C.8, C.9)
# Normalised attention entropy (eq. 17: 1 = uniform over the prefix, 0 = one token) and attention
# variability across sequences (eq. 18: 0 = the same pattern for every input), each head split into
# its x-token and y-token query positions as in the paper (labels B{block}H{head}{x|y}). The paper:
# several y-heads harden and become input-independent ("attention collapse"), and the stages line
# up with these curves.

# %%
head_labels = sorted({c.split(".")[1] for c in probes.columns if c.startswith("attention.")})
head_colors = {lab: plt.get_cmap("tab10")(int(lab[3]) - 1) for lab in head_labels}
for metric, fig_name, title in (("normalised_entropy", "figC8_regression_attention_entropy", "normalised entropy"),
                                ("variability", "figC9_regression_attention_variability", "variability")):
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True, sharey=True)
    for i, block in enumerate(sorted({lab[:2] for lab in head_labels})):
        for j, part in enumerate(("x", "y")):
            labs = [lab for lab in head_labels if lab.startswith(block) and lab.endswith(part)]
            plot_over_training(axes[i, j], ps, {lab: probes[f"attention.{lab}.{metric}"] for lab in labs}, result,
                               colors=[head_colors[lab] for lab in labs], ylabel=title, label_stages=(i == 0))
            axes[i, j].set_title(f"block {block[1]}, {part}-token queries", pad=12)
    for ax in axes[0]:
        ax.set_xlabel("")
    fig.suptitle(f"Attention {title} per head ({'C.8' if metric != 'variability' else 'C.9'}), seed {seed0}", y=1.0)
    fig.tight_layout()
    save_figure(fig, fig_name, profile=cfg.name, directory=figure_dir, setting=figure_setting)
    plt.show()

# %% [markdown]
# ### Head attention patterns (C.10)
# Mean attention pattern of every head over the probe batch, at the checkpoint nearest the LLC's
# maximum (the end of the ICL stage) and at the end of training; rows are query positions
# (x₁, y₁, x₂, …), columns key positions (colour: square-root scale). The paper identifies previous-token, previous-x and
# previous-y heads by such consistent patterns.

# %%
from matplotlib.colors import PowerNorm

from stagewise.probes.regression import mean_attention_patterns

peak_step = int(ps[np.argmin(np.abs(np.log1p(ps) - np.log1p(steps_llc[np.argmax(result.smoothed)])))])
pattern_steps = [peak_step, int(ps[-1])]
batch = regression_probe_batch(cfg)
L, H = cfg.model.n_layers, cfg.model.n_heads
fig, axes = plt.subplots(L * len(pattern_steps), H, figsize=(2.2 * H, 2.3 * L * len(pattern_steps)), squeeze=False)
tick_labels = [f"{'xy'[i % 2]}{i // 2 + 1}" for i in range(2 * cfg.task.max_examples)]
for r, step in enumerate(pattern_steps):
    pats = mean_attention_patterns(runs[seed0].load_model(step), batch).numpy()
    for layer in range(L):
        for head in range(H):
            ax = axes[r * L + layer, head]
            image = ax.imshow(pats[layer, head], cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1))
            ax.set_title(f"step {step}: B{layer + 1}H{head + 1}", fontsize=8)
            ax.set_xticks(range(0, len(tick_labels), 2), tick_labels[::2], fontsize=6)
            ax.set_yticks(range(len(tick_labels)), tick_labels, fontsize=5)
            ax.grid(False)
            if head == 0:
                ax.set_ylabel("query position", fontsize=7)
            if r * L + layer == L * len(pattern_steps) - 1:
                ax.set_xlabel("key position", fontsize=7)
fig.suptitle(f"Mean attention patterns (C.10), seed {seed0}", y=1.0)
fig.tight_layout(rect=(0, 0, 0.93, 1))
fig.colorbar(image, cax=fig.add_axes((0.945, 0.35, 0.015, 0.3)), label="mean attention weight")
save_figure(fig, "figC10_regression_head_patterns", profile=cfg.name, directory=figure_dir, setting=figure_setting)
plt.show()

# %% [markdown]
# ## Which stage signatures appear in our run, and when?
# Each row is a change the paper names for one of its stages, measured on the probe table by
# `stagewise.probes.regression_signatures` with a threshold fixed from the paper's own numbers (or
# from ridge regression), never from our runs (`paper_signatures`' docstring argues each one).
# *when* is the 50% point of a rise/fall (window: 10–90%) — its 10% point where the paper names the
# onset ("starting at the end of LR2") — or the minimum of a dip / minimum;
# *our stage* is the detected LLC stage (numbered from 1) it falls in, named after the paper's by
# `align_stages`; `in_paper_stage` is true when it appears in the stage the paper names.

# %%
from stagewise.probes.regression_signatures import paper_signatures, signature_table

signatures = paper_signatures(cfg.task.noise_variance, ridge)
sig_tables = {seed: signature_table(probe_tables[seed], signatures, stage_results[seed].boundaries, labels[seed])
              for seed in stage_results}
shown = ["paper stage", "signature", "paper when", "column", "appears", "effect", "start", "step", "end", "our stage"]
shown += ["our stage name", "in_paper_stage"] if labels[seed0] is not None else []
sig_tables[seed0][shown].round(3)

# %% [markdown]
# The same signatures for every seed with an LLC curve: *when* (the step) and whether it appears in
# the paper's stage (✓), appears elsewhere (·) or not at all (✗).

# %%
def _mark(row):
    if not row["appears"]:
        return "✗"
    return f"{row['step']:.0f} {'✓' if row.get('in_paper_stage', False) else '·'}"


per_seed = pd.DataFrame({f"seed {seed}": tab.apply(_mark, axis=1) for seed, tab in sig_tables.items()})
per_seed.index = [f"{s.stage}: {s.description}" for s in signatures]
per_seed

# %% [markdown]
# ## What the `cpu` profile shows (10k instead of 500k steps)
#
# * **Stages.** All five seeds go through the same LLC shape: flat (≈ 10) while the loss sits at the
#   predict-0 level, a rise to ≈ 140 with in-context learning, a fall to ≈ 90, and (resolved for
#   seed 0's 60 checkpoints, only one checkpoint long in the other seeds' 24) a small final rise.
#   Named after the paper's stages: LR1, LR2, LR3+LR4 merged into one decrease, LR5; the LR3|LR4
#   boundary is not resolved at this scale. The paper's "little variance across seeds" holds: the
#   LR2|LR3 boundary lies between 1.7k and 1.9k steps in every seed.
# * **Behaviour.** The task-prior (E[ŷ²] minimum, far below σ²: the model starts near 0 already)
#   and ICL signatures appear in the paper's stages in every seed. The early-LR2 dip of ICL_{D:K}
#   is small and reaches our threshold in three seeds only. The OOD-input deterioration of LR3 does
#   not appear: the normalised OOD loss keeps improving to the end.
# * **Structure.** As in the paper, the token embedding's smallest component collapses (its
#   variance share falls ~3×), with an onset in LR2 in four seeds (seed 3: just after the LR2|LR3
#   boundary), and y-heads harden to near one-hot, input-independent patterns (C.10: e.g. y-token
#   queries attending to the preceding x), mid-way in LR2 in all five seeds (2026-12-02 run; in an
#   earlier run on another machine seed 1's came just after the boundary).
#   LayerNorm weights spread (some γ fall to ~0.4 in the first pre-attention LayerNorm during the
#   LLC decrease), but no LayerNorm *collapse* (|γ| < 0.1) happens in 10k steps, and the token embedding moves *away* from the positional subspace
#   rather than aligning with it.
# * **Cost** (2-core CPU, measured under the shared lock): training 190–310 s per seed (227 s in a
#   clean from-scratch run), LLC 10.5–12.5 s per checkpoint for seed 0 (2 chains) and 7.0 s for the
#   other seeds (1 chain), probes 0.25 s per checkpoint, the rest (figures) ≈ 35 s: ≈ 43–45 min
#   from an empty cache, at the limit of its 45-min budget; ≈ 35 s with everything cached. On one
#   thread of a slower 2-core AMD EPYC Zen 3 (inside `make figures`, beside notebook 01) it took
#   70.5 min: training 350–382 s per seed, LLC 2,251 s, probes 120 s (the notebook's JSON has them).
# * **What the late stages need.** The LR3|LR4 boundary, the LayerNorm and unembedding
#   collapses (C.6, C.7), the positional-embedding collapse and the OOD-input deterioration are the
#   paper's late-training (40k–320k step) phenomena; at 2% of its steps our two LLC-decreasing
#   stages merge into one and the weights only begin to spread. The `long` profile runs seed 0
#   for the paper's 500k steps (trained on one CPU core in 4 h 15 min and shipped in `data/runs/`;
#   2026-12-05): there both LayerNorm collapses and the OOD-input turn appear inside the paper's own
#   windows (final LayerNorm at 106k and the g = 10 turn at 111k, in LR3 = 40k–126k; the first
#   attention LayerNorm at 212k, in LR4 = 126k–320k) and the LLC's last rise starts at 300k (paper
#   320k), but the LLC's decrease stays one smooth fall at all 190 checkpoints, as at 60, so LR3|LR4
#   is not resolved with this LLC budget (2 chains × 300 steps on m = 256, against the paper's
#   10 × 5,000 on 1,024), and the essential dynamics finds no form near 126k either.
#   `paper` (5 seeds, the paper's LLC: ~72 CPU-hours per seed) has not been run.
# * **The authors' residual stream.** Run at `long` with `residual="paper_code"` (the authors'
#   doubled stream, its 500k-step run shipped in `data/runs/` too), the section below draws both
#   runs side by side and prints, per residual, whether LR3|LR4 is resolved and where the LLC's
#   fall slows inside the paper's 40k–320k: the doubled stream does not resolve it either (the
#   committed numbers are in `figures/long-paper_code/02_regression_stages.json`).

# %% [markdown]
# ## The residual stream: the paper's text against the authors' code
# The paper describes the standard pre-LN block (`residual="standard"`, this project's default);
# the authors' code adds each block's output to its input a second time (`residual="paper_code"`:
# x ← 2x + attn(LN₁x) + mlp(LN₂(x + attn(LN₁x))), so after two blocks the embeddings enter the
# final LayerNorm with weight 4 against 2 and 1 for the blocks' outputs). Same parameters, same
# initialisation. LR3 and LR4 are two LLC decreases that meet at 126k: a *saddle* of the curve, where
# its fall slows and speeds up again. We measure that directly: the local minima of the GP slope's
# |d λ̂ / d log t| between the paper's 40k and 320k (rescaled to this run's length), where the slope
# keeps its sign (`stagewise.stages.slope_dips`; `relative` is |slope| there over the window's
# largest, 0 = the curve stops falling). Run with the residual that is not the profile's
# (`residual="paper_code"`), this notebook also estimates seed 0 of the profile's own residual with
# the same SGLD settings (cached) and draws the two side by side.

# %%
from stagewise.probes.regression_signatures import PAPER_NUM_STEPS
from stagewise.stages import slope_dips

saddle_window = tuple(b * cfg.train.num_steps / PAPER_NUM_STEPS for b in (40_000, 320_000))
for seed, res in stage_results.items():
    dips = slope_dips(res, *saddle_window)
    print(f"seed {seed} ({cfg.model.residual} residual): slope dips in {saddle_window[0]:,.0f}-{saddle_window[1]:,.0f}: "
          + (", ".join(f"{d['step']:,.0f} (slope {d['slope']:.1f} ± {d['slope_std']:.1f}, relative {d['relative']:.2f})"
                       for d in dips) or "none"))

residual_comparison = None
if cfg.model.residual != base.model.residual:
    t0 = time.perf_counter()
    ref_cfg = dataclasses.replace(cfg, model=base.model, name=profile)
    regression_run(ref_cfg, seed0)
    ref_sweep = regression_llc(ref_cfg.llc_profile(seed0), seed0, executor=llc_executor)
    ref_keep = (ref_sweep.steps > 0) & np.isfinite(ref_sweep.llc_mean)
    ref_res = detect_stages(ref_sweep.steps[ref_keep], ref_sweep.llc_mean[ref_keep],
                            stds=ref_sweep.llc_sem[ref_keep] if ref_cfg.sgld.num_chains > 1 else None, edge_plateaus=True)
    timings["reference residual"] = time.perf_counter() - t0
    own = sweeps[seed0]
    pair = {base.model.residual: (ref_sweep, ref_keep, ref_res),
            cfg.model.residual: (own, (own.steps > 0) & np.isfinite(own.llc_mean), stage_results[seed0])}
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), sharex=True, sharey="row")
    residual_comparison = {}
    for col, (name, (sw, kp, res)) in enumerate(pair.items()):
        plot_over_training(axes[0, col], sw.steps[kp], {"LLC": sw.llc_mean[kp]}, res, color="k", marker=".", ms=3,
                           lw=0.6, legend=False, ylabel=r"LLC $\hat\lambda(w_t)$" if col == 0 else None)
        axes[0, col].plot(res.steps, res.smoothed, color="tab:red", ls=":", lw=1.2)
        axes[0, col].set_title(f"residual={name}: LLC, GP fit, boundaries", fontsize=9)
        ax = axes[1, col]
        ax.plot(res.steps, res.slope, color="tab:red", lw=1)
        ax.fill_between(res.steps, res.slope - 2 * res.slope_std, res.slope + 2 * res.slope_std, color="tab:red",
                        alpha=0.2, lw=0)
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvspan(*saddle_window, color="tab:blue", alpha=0.06, lw=0)
        dips = slope_dips(res, *saddle_window)
        for d in dips:
            ax.axvline(d["step"], color="tab:blue", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel="training step $t$", ylabel=r"GP slope $d\hat\lambda/d\log t$ (±2 s.d.)" if col == 0 else None)
        ax.set_title(f"residual={name}: GP slope; dashed: its dips", fontsize=9)
        names_ = align_stages(res.stages)
        residual_comparison[name] = {
            "boundaries": [float(b) for b in res.boundaries],
            "directions": [st.direction for st in res.stages],
            "names": None if names_ is None else ["+".join(lab) for lab in names_],
            "slope_dips": dips}
    fig.suptitle(f"Regression LLC of seed {seed0} with each residual stream ({profile} profile, "
                 f"{len(own.steps)} checkpoints, same SGLD)\nblue band: the paper's 40k-320k (LR3 and LR4), "
                 f"rescaled to {cfg.train.num_steps:,} steps")
    fig.tight_layout()
    save_figure(fig, "fig1b_regression_llc_by_residual", profile=cfg.name, directory=figure_dir, setting=figure_setting)
    plt.show()
    print(pd.DataFrame(residual_comparison).T)
    # the verdict of this section, per residual: LR3|LR4 is resolved when the stages are named LR3
    # and LR4 apart (align_stages), not merged as LR3+LR4
    for name, rec in residual_comparison.items():
        rec["lr3_lr4_resolved"] = rec["names"] is not None and "LR3" in rec["names"] and "LR4" in rec["names"]
        print(f"residual={name}: LR3|LR4 {'resolved' if rec['lr3_lr4_resolved'] else 'NOT resolved'}; "
              f"{len(rec['slope_dips'])} slope dip(s) in the LR3-LR4 window"
              + "".join(f", at {d['step']:,.0f} (relative {d['relative']:.2f})" for d in rec["slope_dips"]))

# %% [markdown]
# ## SGLD calibration (App. D.3.3)
# Are the chains converged, and is the paper's (ε, nβ, γ) usable at this profile's budget? As in
# App. D.3.3, at four representative checkpoints of seed 0's curve (the first, the LLC's peak, the
# step before the boundary nearest the middle of the run, the last): a grid over ε × nβ of short
# chains (γ kept), each classified as *diverged* (NaN, or λ̂ beyond d), *escape* (loss below
# ℓ(w*)), *stalled* (the running estimate still drifts, or the chains disagree) or *good*; and, at
# the profile's own setting, one chain five times as long with the same seed, whose first draws are
# the profile's chain 0, so its running estimate at the profile's draw count is the profile's. The
# profile's estimate is compared with that chain's settled value (the mean of its second half).
# Then every estimate of the main sweeps that is flagged: *unconverged* (the running estimate moved
# by more than 5%/3 over its last quarter, significantly, or the chains disagree by more than 5%
# with split-R̂ > 1.1; `stagewise.llc.estimate_convergence`) or with a flagged chain.

# %%
from stagewise.llc import save_calibration_figures
from stagewise.runs import regression_sgld_calibration

t0 = time.perf_counter()
calibration = regression_sgld_calibration(cfg.llc_profile(seed0), seed0, sweeps[seed0], stage_results[seed0].boundaries)
timings["SGLD calibration"] = time.perf_counter() - t0
save_calibration_figures(calibration, "regression", f"{cfg.name} profile, seed {seed0}, residual={cfg.model.residual}",
                         profile=cfg.name, directory=figure_dir)
plt.show()
print(calibration.long_table().drop(columns="profile_chains").round(3).to_string(index=False))
print("usable (good at every calibration checkpoint), rows (nβ, γ), columns ε:")
print(calibration.usable())
for seed in cfg.llc_seeds:
    flagged = sweeps[seed].flagged_checkpoints()
    print(f"seed {seed}: {len(flagged)} of {len(sweeps[seed].steps)} estimates flagged "
          f"({len(sweeps[seed].unconverged_steps)} unconverged)")
    if len(flagged):
        print(flagged.round(3).to_string(index=False))
print(calibration.sentence())

# %% [markdown]
# ## Headline numbers as data
# Written to `02_regression_stages.json` beside this profile's figures: per seed with
# an LLC curve, the detected boundaries with their intervals and the LLC there, the stages' names
# and directions, the paper's boundaries against ours, and the step at which each named signature
# appears (null when it does not); the training and LLC costs; the notebook's wall time.

# %%
from stagewise.headline import snake_case, stage_headline, write_headline

timings["total"] = time.perf_counter() - notebook_start
print("time per part (s):", {k: round(v, 1) for k, v in timings.items()})
headline = {"steps": cfg.train.num_steps, "batch_size": cfg.batch_size, "residual": cfg.model.residual, "seeds": {},
            "timings_s": {snake_case(k): v for k, v in timings.items()},
            "reference_losses": {"predict_zero": zero_loss, "ridge": ridge_loss}}
for seed, res in stage_results.items():
    sw = sweeps[seed]
    kept = (sw.steps > 0) & np.isfinite(sw.llc_mean)
    names = ["+".join(lab) for lab in labels[seed]] if labels[seed] is not None else None
    record = stage_headline(res, sw.steps[kept], sw.llc_mean[kept], names)
    record["training_s"] = runs[seed].seconds
    record["final_train_loss"] = float(runs[seed].smoothed_loss()[-1])
    record["llc_checkpoints"] = int(len(sw.steps))
    record["flagged_checkpoints"] = sorted(int(s) for s in sw.diagnostics)
    record["convergence"] = sw.convergence_summary()
    # the curve itself, for comparisons across runs (the residual section) without the cache
    record["llc_curve"] = {"step": res.steps, "llc": sw.llc_mean[kept], "gp_mean": res.smoothed,
                           "gp_slope": res.slope, "gp_slope_std": res.slope_std}
    record["slope_dips"] = slope_dips(res, *saddle_window)
    record["boundaries_vs_paper"] = ([] if labels[seed] is None else [
        {"boundary": r.boundary, "paper": r.paper, "rescaled": r.rescaled, "detected": r.detected,
         "interval": [r.interval_lo, r.interval_hi]}
        for r in boundary_table(res.boundaries, res.intervals, labels[seed], cfg.train.num_steps).itertuples()])
    record["signatures"] = [
        {"paper_stage": row["paper stage"], "signature": row["signature"], "appears": bool(row["appears"]),
         "step": float(row["step"]) if row["appears"] else None,
         "in_paper_stage": bool(row.get("in_paper_stage", False)), "our_stage": row.get("our stage name")}
        for _, row in sig_tables[seed].iterrows()]
    ed = eds[seed]
    record["essential_dynamics"] = {
        "explained_variance": [float(v) for v in ed.pca.explained_variance_ratio],
        "forms": [{"step": f.step, "turn_degrees": f.turn, "snr": f.snr,
                   "plane_vertices": {f"pc{c.pair[0] + 1}_pc{c.pair[1] + 1}": c.step for c in f.cusps}}
                  for f in ed.forms],
        "boundary_matches": forms_against_boundaries([f.step for f in ed.forms], res.boundaries)
        if len(res.boundaries) else [],
        "settings": ed.settings}
    headline["seeds"][f"seed_{seed}"] = record
headline["residual_comparison"] = residual_comparison
headline["sgld_calibration"] = calibration.to_record(sweeps[seed0])
headline["llc_boundaries_at_60_checkpoints"] = None if boundaries_60 is None else [float(b) for b in boundaries_60]
path = write_headline("02_regression_stages", cfg.name, headline, wall_time_s=timings["total"],
                      directory=figure_dir)
print(f"headline numbers: {path}")
