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
# (LLC) finds as plateaus and turning points of λ̂(w_t).
#
# This notebook trains the model at the chosen profile (cached: a rerun loads the checkpoints,
# an interrupted run resumes), and draws the training loss of every seed.
#
# *Profile scale.* `paper` is the paper's 500k steps; `cpu` is a shorter one-cycle schedule of the
# same model and batch (see the README for what it reproduces); `smoke` only exercises the code.

# %% tags=["parameters"]
profile = None  # smoke, cpu or paper; None reads STAGEWISE_PROFILE, else cpu
seeds = None  # list of training seeds; None keeps the profile's

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from stagewise.models.regression import RegressionTransformer, count_parameters
from stagewise.plotting import apply_style, save_figure
from stagewise.profiles import default_profile, get_profile
from stagewise.runs import regression_run

profile = profile or default_profile()
overrides = {"seeds": tuple(seeds)} if seeds is not None else {}
cfg = get_profile("regression", profile, **overrides)
apply_style()
print(f"profile {cfg.name}: {cfg.train.num_steps:,} steps x batch {cfg.batch_size}, seeds {cfg.seeds}")
print(f"model parameters: {count_parameters(RegressionTransformer(cfg.model)):,}")

# %% [markdown]
# ## Training
# Adam, max learning rate 0.003, one-cycle linear schedule with `pct_start` 0.5, no weight decay
# (Table D.2). Checkpoints: 100 linearly + 90 log-spaced steps (the union, deduplicated).

# %%
runs = {}
for seed in cfg.seeds:
    t0 = time.perf_counter()
    runs[seed] = regression_run(cfg, seed)
    print(f"seed {seed}: {len(runs[seed].checkpoint_steps)} checkpoints, "
          f"final loss {runs[seed].smoothed_loss()[-1]:.4f} ({time.perf_counter() - t0:.0f} s, cached runs load instantly)")

# %% [markdown]
# ## Training loss of every seed (cf. Fig. B.1b, loss panel)
# The loss is smoothed by a moving average over 1% of the run. The dashed lines are two reference
# levels: the loss of always predicting 0 (E[y²] = D + σ²) and the Bayes-optimal loss of ridge
# regression averaged over k (computed on the evaluation set).

# %%
import torch

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
ax.set(xscale="log", yscale="log", xlabel="training step", ylabel="training loss (MSE)",
       title=f"Regression transformer, {cfg.name} profile")
ax.legend(ncol=2)
save_figure(fig, "figB1b_regression_loss", profile=cfg.name)
plt.show()
