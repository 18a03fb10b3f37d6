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
# # 05 — Curvature is not degeneracy: the Hessian against the LLC
#
# Main paper Fig. 2 / App. A.1 and Fig. 6b / App. C.2.2. The Hessian at w* sees only the quadratic
# part of the loss: its trace, top eigenvalue and rank cannot tell w₁⁴ + w₂⁴ (λ = 1/2) from
# w₁²w₂⁴ (λ = 1/4) — both Hessians vanish at the origin — while the LLC separates them. Over
# training, the paper finds that Hessian statistics pick out only one of the four regression stage
# boundaries the LLC finds.
#
# Library: `stagewise.potentials` (toy losses with exact λ), `stagewise.hessian` (HVPs by
# forward-over-reverse `torch.func`, Hutchinson trace, Lanczos top eigenvalues, exact spectra),
# `stagewise.llc` (SGLD), `stagewise.stages` (stage detection).

# %% tags=["parameters"]
profile = None  # smoke, cpu, long or paper; None reads STAGEWISE_PROFILE, else cpu
seed = None  # regression training seed to analyse; None takes the first seed of the profile
dask_scheduler = None  # Dask scheduler address for the LLC sweeps; None reads $STAGEWISE_DASK_SCHEDULER, else in-process
retrain = False  # True: train even where a run is shipped in data/runs/ (`long`), as notebook 02's parameter
residual = None  # regression residual stream, as notebook 02's parameter: "standard" or "paper_code"; None keeps the profile's

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from stagewise.cluster import sweep_executor
from stagewise.llc import SGLDConfig
from stagewise.plotting import apply_style, plot_stages, save_figure
from stagewise.potentials import FIGURE_2, POTENTIALS, toy_comparison
from stagewise.profiles import default_profile, get_profile
from stagewise.profiles.hessian import TOY_SGLD

notebook_start = time.perf_counter()
profile = profile or default_profile()
llc_executor = sweep_executor(dask_scheduler)  # 'serial', or a Client of that scheduler
cfg = get_profile("hessian", profile)
reg_base = get_profile("regression", profile)
if residual is not None and residual != reg_base.model.residual:
    # another residual than the profile's: notebook 02's run of it, and figures/<profile>-<residual>/
    # (the residual in every title through the name), as notebook 02 writes
    cfg = dataclasses.replace(cfg, name=f"{profile}-{residual}")
apply_style()
print(cfg)

# %% [markdown]
# ## Toy potentials: LLC against Hessian statistics (Fig. 2, App. A.1)
# SGLD with γ = 1 and a large nβ per potential (`TOY_SGLD`; the LLC engine's tests validate these
# settings against the exact λ within 12%). The Hessian is exact (the potentials are 2–3
# dimensional); rank counts eigenvalues above 10⁻⁶ of the largest.

# %%
rows = []
for name, pot in POTENTIALS.items():
    nbeta, eps = TOY_SGLD[name]
    sgld = SGLDConfig(epsilon=eps, gamma=1.0, nbeta=nbeta, num_chains=cfg.toy_chains, num_draws=cfg.toy_draws,
                      num_burnin=cfg.toy_draws // 5, seed=0)
    rows.append(toy_comparison(pot, sgld))  # cached: a rerun loads it
toy = pd.DataFrame(rows).set_index("name")
toy.round(3)

# %%
fig, axes = plt.subplots(1, len(FIGURE_2), figsize=(11, 3.0))
grid = torch.linspace(-1.2, 1.2, 201, dtype=torch.float64)
W1, W2 = torch.meshgrid(grid, grid, indexing="xy")
for ax, name in zip(axes, FIGURE_2):
    pot, r = POTENTIALS[name], toy.loc[name]
    Z = pot.fn({"w": torch.stack([W1, W2], -1)}).clamp(max=2.0)
    ax.contourf(W1, W2, Z, levels=20, cmap="viridis")
    ax.set_title(f"{pot.latex}\nλ = {r['λ (exact)']:.2f},  λ̂ = {r['λ̂ (SGLD)']:.2f}\n"
                 f"tr H = {r['tr H']:.1f},  rank H = {r['rank H']}", fontsize=8)
    ax.set_aspect("equal")
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    ax.set(xlabel="$w_1$", ylabel="$w_2$" if ax is axes[0] else "")
fig.suptitle("The LLC separates potentials the Hessian at w* = 0 cannot (Fig. 2)\n"
             "each panel: one potential K(w) over $(w_1, w_2)$, filled contours (dark = low, cut at K = 2)",
             y=1.14)
save_figure(fig, "fig2_toy_potentials_llc_vs_hessian", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Curvature over training of the regression transformer (Fig. 6b, App. C.2.2)
# The checkpoints come from notebook 02's cache (the same profile trains the same run; if notebook 02
# has not run yet, this trains it, or at `long` loads the run shipped in `data/runs/`). Hutchinson trace (Rademacher probes, ± standard error) and the
# top eigenvalue (Lanczos, residual tolerance `lanczos_tol`) on one fixed batch of `hessian_batch`
# sequences, then the same stage detector as for the LLC.

# %%
from stagewise.runs import regression_hessian
from stagewise.stages import detect_stages

reg_model = reg_base.model if residual is None else dataclasses.replace(reg_base.model, residual=residual)
reg = get_profile("regression", profile, model=reg_model, use_shipped_run=not retrain)
if reg.model.residual != reg_base.model.residual:
    reg = dataclasses.replace(reg, name=cfg.name)
seed = reg.seeds[0] if seed is None else seed
t0 = time.perf_counter()
curv = regression_hessian(reg, cfg, seed)
print(f"{len(curv)} checkpoints in {time.perf_counter() - t0:.0f} s (cached per checkpoint); "
      f"Lanczos converged at {curv.converged.mean():.0%} of them")
curv.head()

# %%
positive = curv.index.values > 0  # log-step axis
x = curv.index.values[positive]
figs = {}
for column, label in (("trace", "Hessian trace"), ("top_eig", "top Hessian eigenvalue")):
    values = curv[column].values[positive]
    stds = curv["trace_se"].values[positive] if column == "trace" else None
    result = detect_stages(x, values, stds=stds)
    figs[column] = result
    fig = plot_stages(result, x, values, stds=stds, value_label=label,
                      title=f"{label} over training ({reg.name} profile, seed {seed}, residual={reg.model.residual})")
    save_figure(fig, f"fig6b_regression_{column}", profile=cfg.name, setting=reg.model.setting)
    plt.show()
    print(label, "boundaries:", np.round(result.boundaries).astype(int))

# %% [markdown]
# ## Which LLC boundaries does curvature find?
# The LLC sweep of the same run (notebook 02's cache; computed here if missing) and its stages. A
# curvature boundary "finds" an LLC boundary when it lies within a factor `match_factor` in steps
# (a tolerance in log-step, stated here because the paper matched by eye).

# %%
from stagewise.runs import regression_llc

match_factor = 1.5
sweep = regression_llc(reg, seed, executor=llc_executor)
keep = sweep.steps > 0
llc_stages = detect_stages(sweep.steps[keep], sweep.llc_mean[keep])
rows = []
for b in llc_stages.boundaries:
    row = {"LLC boundary": int(round(b))}
    for column in ("trace", "top_eig"):
        found = [c for c in figs[column].boundaries if abs(np.log(c / b)) <= np.log(match_factor)]
        row[f"{column} boundary"] = int(round(found[0])) if found else None
    rows.append(row)
matches = pd.DataFrame(rows, columns=["LLC boundary", "trace boundary", "top_eig boundary"])
print(f"LLC boundaries found by the trace: {matches['trace boundary'].notna().sum()} of {len(matches)}; "
      f"by the top eigenvalue: {matches['top_eig boundary'].notna().sum()} of {len(matches)} (paper: 1 of 4)")
matches

# %% [markdown]
# ## Headline numbers as data
# Written to `05_hessian_comparison.json` beside this profile's figures: the toy
# potentials' exact and estimated LLCs beside their Hessian trace and rank, the boundaries of the
# LLC, the trace and the top eigenvalue over the regression run, and which LLC boundaries curvature
# finds (within the factor `match_factor`).

# %%
from stagewise.headline import write_headline

headline = {
    "toy_potentials": [{"potential": name, "llc_exact": r["λ (exact)"], "llc_estimate": r["λ̂ (SGLD)"],
                        "llc_se": r["λ̂ s.e."], "hessian_trace": r["tr H"], "hessian_top_eigenvalue": r["λ_max(H)"],
                        "hessian_rank": int(r["rank H"])} for name, r in toy.iterrows()],
    "regression_profile": reg.name, "residual": reg.model.residual, "seed": seed, "steps": reg.train.num_steps, "match_factor": match_factor,
    "llc_boundaries": llc_stages.boundaries, "trace_boundaries": figs["trace"].boundaries,
    "top_eigenvalue_boundaries": figs["top_eig"].boundaries,
    "matches": [{"llc_boundary": r["LLC boundary"], "trace_boundary": r["trace boundary"],
                 "top_eigenvalue_boundary": r["top_eig boundary"]} for r in matches.to_dict("records")],
    "llc_boundaries_found_by_trace": int(matches["trace boundary"].notna().sum()),
    "llc_boundaries_found_by_top_eigenvalue": int(matches["top_eig boundary"].notna().sum()),
}
print(f"headline numbers: {write_headline('05_hessian_comparison', cfg.name, headline, time.perf_counter() - notebook_start)}")
