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
# # 03 — The transient ridge: task diversity and the dMMSE / ridge trade-off
#
# Carroll et al.: transformers trained on in-context linear regression with M distinct tasks first
# move towards ridge regression (optimal for infinitely many tasks), then — for intermediate M —
# turn towards the discrete MMSE predictor dMMSE_M (optimal for the M training tasks). The
# trade-off is loss against complexity (LLC).
#
# This notebook currently computes the two ideal predictors exactly (library: `stagewise.ridge`)
# and the loss each achieves on the training prior q_M and on q_∞, across the task-diversity grid.
# Training one transformer per M, the joint trajectory PCA and the LLC comparison follow.

# %% tags=["parameters"]
profile = None  # smoke, cpu or paper; None reads STAGEWISE_PROFILE, else cpu

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from stagewise.data.regression import RegressionTask, sample_batch, task_set
from stagewise.plotting import apply_style, save_figure
from stagewise.profiles import default_profile, get_profile
from stagewise.ridge import dmmse_predict, ridge_predict

profile = profile or default_profile()
cfg = get_profile("ridge", profile)
apply_style()
print(f"profile {cfg.name}: D = {cfg.task_size}, K = {cfg.max_examples}, M grid = {cfg.m_grid}")

# %% [markdown]
# ## Loss of the ideal predictors against task diversity (cf. Fig. 3, left)
# For each M: sequences from q_M (tasks drawn uniformly from the nested set T_M) and from
# q_∞ = N(0, I_D). dMMSE_M is optimal on q_M; ridge is optimal on q_∞. The gap between them on
# q_M shrinks as M grows, since dMMSE_M → ridge.

# %%
rows = []
# one fixed q_∞ test set for every M, so the ridge OOD line is the same predictor on the same data
ood = sample_batch(RegressionTask(cfg.task_size, cfg.max_examples, cfg.noise_variance), cfg.num_eval,
                   torch.Generator().manual_seed(999))
for M in cfg.m_grid:
    task = RegressionTask(cfg.task_size, cfg.max_examples, cfg.noise_variance, num_tasks=M, task_seed=cfg.task_seed)
    tasks = task_set(task)
    gen = torch.Generator().manual_seed(1000 + M)
    in_dist = sample_batch(task, cfg.num_eval, gen)
    row = {"M": M}
    for label, b in (("q_M", in_dist), ("q_inf", ood)):
        row[f"dmmse_{label}"] = ((dmmse_predict(b.xs, b.ys, tasks, cfg.noise_variance) - b.ys) ** 2).mean().item()
        row[f"ridge_{label}"] = ((ridge_predict(b.xs, b.ys, cfg.noise_variance) - b.ys) ** 2).mean().item()
    rows.append(row)

import pandas as pd

table = pd.DataFrame(rows).set_index("M")
table.round(4)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for ax, label, title in ((axes[0], "q_M", "in distribution (q_M)"), (axes[1], "q_inf", "out of distribution (q_∞)")):
    ax.plot(table.index, table[f"dmmse_{label}"], "o-", ms=3, label="dMMSE$_M$")
    ax.plot(table.index, table[f"ridge_{label}"], "s-", ms=3, label="ridge")
    ax.set(xscale="log", xlabel="task diversity M", title=title)
axes[0].set_ylabel("mean squared error")
axes[0].legend()
save_figure(fig, "fig3a_ideal_predictor_loss", profile=cfg.name)
plt.show()
