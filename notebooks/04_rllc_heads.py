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
# # 04 — Refined LLC of attention heads
#
# Wang et al.: restricting SGLD to one attention head's weights (the weight-refined LLC, wrLLC)
# gives a per-head complexity curve over training; heads of the same type (previous-token,
# induction, multigram) share curve shapes, and the curves differentiate as training proceeds.
#
# This notebook analyses the language model trained by notebook 01 at the same profile (shared
# through the artifact cache; trained here if missing). It currently computes the wrLLC of every
# head at a few checkpoints. Data-refined variants, head classification and clustering follow.

# %% tags=["parameters"]
profile = None  # smoke, cpu or paper; None reads STAGEWISE_PROFILE, else cpu

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stagewise.data.language import load_contexts
from stagewise.llc import estimate_llc_module
from stagewise.models.language import lm_forward_loss
from stagewise.plotting import apply_style, save_figure
from stagewise.profiles import default_profile, get_profile
from stagewise.refined import head_labels, head_param_mask
from stagewise.runs import language_run
from stagewise.train import analysis_steps

profile = profile or default_profile()
cfg = get_profile("rllc", profile)
lm = get_profile("language", cfg.language)
apply_style()
print(cfg)

# %% [markdown]
# ## The trained model and the SGLD data
# SGLD batches come from the corpus's held-out `sgld` split (as the paper used separate Pile lines).

# %%
run = language_run(lm)
steps = analysis_steps(run.checkpoint_steps[1:], cfg.num_checkpoints)  # skip initialisation
sgld_data = (load_contexts(lm.corpus, "sgld", lm.model.n_ctx).long(),)
print(f"checkpoints analysed: {steps.tolist()}; SGLD contexts: {len(sgld_data[0]):,}")


# %% [markdown]
# ## wrLLC of every head
# Each head's W_Q, W_K, W_V, W_O and per-head biases move; every other weight stays exactly at w*
# (tested in `tests/test_refined.py` and the LLC engine's tests). Same SGLD seed at every
# checkpoint and head (same noise and batches).

# %%
labels = head_labels(lm.model.n_layers, lm.model.n_heads)
rows = []
t0 = time.perf_counter()
for step in steps:
    model = run.load_model(step)
    for label in labels:
        layer, head = map(int, label.split(":"))
        names, mask = head_param_mask(model, layer, head)
        r = estimate_llc_module(model, lm_forward_loss, sgld_data, cfg.sgld, params_to_sample=names,
                                param_mask=mask, progress=False)
        rows.append({"step": int(step), "head": label, "layer": layer, "wrllc": r.llc_mean, "sem": r.llc_sem,
                     "flags": r.diagnostics or ""})
wr = pd.DataFrame(rows)
print(f"{len(rows)} estimates in {time.perf_counter() - t0:.0f} s")
wr.pivot(index="head", columns="step", values="wrllc").round(2)

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
width = 0.8 / len(steps)
x = np.arange(len(labels))
for i, step in enumerate(steps):
    sub = wr[wr.step == step].set_index("head").loc[labels]
    ax.bar(x + i * width, sub.wrllc, width, yerr=sub["sem"].fillna(0), label=f"step {step}", capsize=1.5)
ax.set_xticks(x + 0.4 - width / 2, labels, rotation=90)
ax.set(xlabel="head (layer:head)", ylabel="wrLLC", title=f"Weight-refined LLC per head ({cfg.name} profile)")
ax.legend()
save_figure(fig, "fig2_rllc_per_head", profile=cfg.name)
plt.show()
