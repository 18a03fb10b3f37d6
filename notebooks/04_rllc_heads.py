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
# Wang et al.: restricting SGLD to one attention head's weights (the weight-refined LLC, wrLLC
# λ̂(w*; V_h)) gives a per-head complexity curve over training; heads of the same type
# (previous-token, current-token, induction, multigram) share curve shapes, and the curves
# differentiate as training proceeds. Drawing the SGLD batches from another distribution q'
# (the data-refined LLC, drLLC λ̂(w*; q')) shows which heads specialise in which data: multigram
# heads have lower drLLC on code, induction heads higher.
#
# This notebook analyses the two-layer language model of notebook 01 at the same profile (shared
# through the artifact cache; trained here if missing): per-head wrLLC and wdrLLC curves (code and
# German as q'), head classes from notebook 01's probes, the whole-model drLLC per data set
# (Fig. 12), the per-head ICL score under mean ablation (Fig. 10), ablation-based tokens-in-context
# patterns (App. B), clustering of the curves (App. F.5) and layer-0 → layer-1 composition (Fig. 7).
#
# **Our choices** (the paper is silent or our data differs): "code" is the Python standard library
# of the running interpreter and the other domain is German text (Debian `fortunes-de`), both offline
# (`stagewise.data.domains`, licences in the manifests); the SGLD loss may be evaluated at every
# `sgld_stride`-th position (an unbiased CPU economy, `lm_forward_loss_subsampled`), by the
# plain-torch twin of the model (`stagewise.models.language_fast`: same weights, same function); mean ablation
# uses per-position means over a reference set of training-distribution contexts.

# %% tags=["parameters"]
profile = None  # smoke, cpu, long or paper; None reads STAGEWISE_PROFILE, else cpu
dask_scheduler = None  # Dask scheduler address for the LLC sweeps; None reads $STAGEWISE_DASK_SCHEDULER, else in-process

# %%
import dataclasses
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stagewise.cluster import sweep_executor
from stagewise.clustering import cluster_table, curve_matrix
from stagewise.plotting import apply_style, plot_over_training, save_figure, stamp_setting
from stagewise.probes.ablation import classify_tokens_in_context, pattern_fractions, vocabulary_strings
from stagewise.probes.language import classify_heads, composition_at, head_scores_at
from stagewise.profiles import default_profile, get_profile
from stagewise.runs import (rllc_ablation_inputs, rllc_head_sweeps, rllc_icl_scores, rllc_inputs, rllc_probe_table,
                            rllc_tokens_in_context, rllc_whole_model_sweep)

# `stagewise-figures --jobs 2` may run this notebook's ablation scores and LLC sweeps from the other
# end on an idle core (shared through the cache; the numbers do not depend on it):
# stagewise-helper: stagewise.runs:rllc_sweep_helper

notebook_start = time.perf_counter()
profile = profile or default_profile()
llc_executor = sweep_executor(dask_scheduler)  # 'serial', or a Client of that scheduler
cfg = get_profile("rllc", profile)
lm = get_profile("language", cfg.language)
apply_style()
print(cfg)
print(lm.analogue or "the language profile's data: plain text (the paper's kind)")
# every figure names the profile and, where the language model's data are an analogue of the paper's,
# that analogue
setting = f"{cfg.name} profile" + (f"\n{textwrap.fill(lm.analogue, 110)}" if lm.analogue else "")


def stamp(fig):
    """Add the setting under the figure's title (or as its title)."""
    stamp_setting(fig, setting)

# %% [markdown]
# ## The trained model, checkpoints and data sets
# The checkpoints analysed are `num_checkpoints` of notebook 01's analysis checkpoints, spread evenly
# in log(step) (initialisation excluded). SGLD batches of the training distribution come from the
# corpus's held-out `sgld` split (as the paper used separate Pile lines).

# %%
inputs = rllc_inputs(cfg)  # notebook 01's trained model (trained here if missing), checkpoints, data sets
steps, checkpoints, data = inputs.steps, inputs.checkpoints, inputs.data
model_fn, loss = inputs.model_fn, inputs.loss  # the LM profile's LLC fast path (plain-torch twin, strided loss)
print(f"checkpoints: {steps.tolist()}")
print({k: tuple(v[0].shape) for k, v in data.items()})

# %% [markdown]
# ## Head classes at the end of training
# From the same probes as notebook 01 (previous-/current-token scores on random sequences,
# prefix-matching score on repeated random sequences; thresholds in `stagewise.probes.language_structure`).

# %%
val, probe_table = rllc_probe_table(cfg, inputs)  # notebook 01's probe rows, from the cache
ablation = rllc_ablation_inputs(cfg, inputs, val, probe_table)  # what the ablation sections read
final, labels = ablation.final, ablation.labels
scores = head_scores_at(probe_table, final)
classes = classify_heads(scores)
display(pd.concat([scores, classes], axis=1).round(3))
CLASS_COLORS = {"previous-token": "tab:green", "current-token": "tab:orange", "induction": "tab:red",
                "multigram": "tab:blue"}

# %% [markdown]
# ## wrLLC and wdrLLC of every head over training (Fig. 1–3)
# Each head's W_Q, W_K, W_V, W_O and per-head biases move; every other weight stays exactly at w*
# (tested). The same SGLD seed, noise and batch order at every checkpoint and head; each estimate is
# cached (`head_llc_sweep`), so an interrupted sweep resumes. The data-refined runs use nβ = 30
# (App. F.2) instead of 23. A head's chains run through `HeadChainLM`: the same weights and function
# as the whole model, with everything upstream of the head (the embeddings, earlier layers, the
# other heads of its layer) computed once per batch and no backward pass through it — the same
# estimate to float rounding in about 70% of the time (`benchmarks/bench_head_chains.py`).

# %%
t0 = time.perf_counter()
wr, wdr = rllc_head_sweeps(cfg, inputs, executor=llc_executor)  # head_llc_sweep on train, then on head_domains
dr_cfg = dataclasses.replace(cfg.sgld, nbeta=cfg.data_refined_nbeta)
head_domains = inputs.head_domains
heads_frame = pd.concat([wr, wdr], ignore_index=True)
n_est = len(heads_frame)
n_heads, n_data = heads_frame["head"].nunique(), heads_frame["data"].nunique()
print(f"{n_est} per-head estimates ({n_heads} heads x {len(steps)} checkpoints x "
      f"{n_data} data sets x {cfg.sgld.num_chains} chains x {cfg.sgld.num_steps} steps) "
      f"in {time.perf_counter() - t0:.0f} s (cached estimates load instantly)")
flagged = heads_frame[heads_frame["flags"] != ""]
print(f"flagged estimates: {len(flagged)}" + ("" if flagged.empty else "\n" + flagged[["data", "head", "step", "flags"]].to_string()))

# %%
fig, axes = plt.subplots(1, lm.model.n_layers, figsize=(5 * lm.model.n_layers, 3.4), sharey=True, squeeze=False)
for ax, layer in zip(axes[0], range(lm.model.n_layers)):
    part = wr[wr["layer"] == layer]
    for head, g in part.groupby("head"):
        ax.plot(g["step"], g["llc_mean"], "o-", ms=2.5, lw=1.2, color=CLASS_COLORS[classes[head]], label=f"{head} ({classes[head]})")
    ax.set(xscale="log", xlabel="training step $t$", title=f"layer {layer}: wrLLC of each head over training")
    ax.legend(fontsize=6, ncol=2)
axes[0, 0].set_ylabel("wrLLC $\\hat\\lambda(w_t; V_h)$")
fig.suptitle(f"Weight-refined LLC per head, coloured by class at step {final:,}")
fig.tight_layout()
stamp(fig)
save_figure(fig, "fig2_rllc_per_head", profile=cfg.name)
plt.show()

# %% [markdown]
# ### Differentiation over training
# The paper's curves start alike and spread apart. We measure the spread as the coefficient of
# variation (std / mean) of the wrLLC across the heads of a layer, at every checkpoint.

# %%
spread = wr.groupby(["layer", "step"])["llc_mean"].agg(lambda v: v.std() / abs(v.mean())).unstack("layer")
spread.columns = [f"layer {c} CV" for c in spread.columns]
display(spread.round(3))

# %% [markdown]
# ## Data-refined LLC per head: code (and German) against the training distribution (Fig. 3)
# Ratio wdrLLC(q') / wrLLC(train) per head at the final checkpoint, and the curves over training.
# The paper: multigram heads lower on code, induction heads higher.

# %%
pivot = heads_frame.pivot_table(index=["head", "step"], columns="data", values="llc_mean").reset_index()
end = pivot[pivot["step"] == final].set_index("head").loc[labels]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
x = np.arange(len(labels))
width = 0.8 / len(end.columns.intersection(list(data)))
for i, name in enumerate(end.columns.intersection(list(data))):
    axes[0].bar(x + i * width, end[name], width, label=name)
axes[0].set_xticks(x + 0.4 - width / 2, labels, rotation=90)
for tick, head in zip(axes[0].get_xticklabels(), labels):
    tick.set_color(CLASS_COLORS[classes[head]])
axes[0].set(xlabel="head (layer:head)", ylabel="(w)drLLC $\\hat\\lambda$ at the final checkpoint",
            title=f"(w)drLLC of each head per data set, step {final:,} (label colour = class)")
axes[0].legend(fontsize=7)
for head, g in pivot.groupby("head"):
    axes[1].plot(g["step"], g["code"] / g["train"], lw=1, color=CLASS_COLORS[classes[head]], alpha=0.8)
axes[1].axhline(1, color="k", lw=0.6, ls=":")
axes[1].set(xscale="log", xlabel="training step $t$", ylabel="code / train (ratio)",
            title="per head over training: wdrLLC(code) / wrLLC(train) (dotted: 1)")
fig.tight_layout()
stamp(fig)
save_figure(fig, "fig3_drllc_code_vs_train", profile=cfg.name)
plt.show()
ratio = (end["code"] / end["train"]).rename("code/train")
display(pd.concat([ratio, classes.rename("class")], axis=1).groupby("class")["code/train"].describe().round(3))

# %% [markdown]
# ## Whole-model drLLC on each data set (Fig. 12)
# The paper finds roughly shifted copies of the LLC curve with the stage boundaries kept.

# %%
t0 = time.perf_counter()
whole = rllc_whole_model_sweep(cfg, inputs, executor=llc_executor)  # data_llc_sweep with the LM's own SGLD settings
print(f"whole-model (dr)LLCs in {time.perf_counter() - t0:.0f} s")
fig, ax = plt.subplots(figsize=(6, 3.2))
plot_over_training(ax, steps, {name: g.set_index("step").loc[steps, "llc_mean"] for name, g in whole.groupby("data")},
                   ylabel="whole-model (dr)LLC $\\hat\\lambda$", marker="o", ms=2.5)
ax.set_title("Whole-model drLLC per data set")
stamp(fig)
save_figure(fig, "fig12_drllc_whole_model", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Per-head ICL score under mean ablation (Fig. 10)
# For each of two layer-1 heads, the ICL score (loss late − loss early in the context) with the
# *other* head mean-ablated: a head that carries in-context learning alone keeps a negative score.
# The heads are the run's two layer-1 heads with the highest prefix-matching score at the end (the
# paper's induction heads 1:6 and 1:7 where they exist).

# %%
pair, k1, k2 = ablation.pair, ablation.k1, ablation.k2
icl_frame = rllc_icl_scores(inputs, ablation)  # cached per checkpoint (the helper may have computed them)
fig, ax = plt.subplots(figsize=(6, 3.2))
plot_over_training(ax, icl_frame.index, {f"{c} alone (others ablated)" if ":" in c else c: icl_frame[c] for c in icl_frame},
                   ylabel=f"ICL score (loss at {k2} − at {k1}, nats)", marker="o", ms=2.5)
ax.set_title(f"Per-head ICL score of {' and '.join(pair)}")
stamp(fig)
save_figure(fig, "fig10_per_head_icl_score", profile=cfg.name)
plt.show()
icl_frame.round(3)

# %% [markdown]
# ## Tokens in context most affected by ablating each head (App. B)
# For every head, the `tokens_in_context` tokens whose loss rises most under mean ablation at the final
# checkpoint, classified automatically as induction ([A][B] … [A] → [B], attention on the earlier
# [B] or its neighbours), Dyck (the next token closes a bracket opened earlier), n-gram (the attended
# span recurs), or unexplained.

# %%
vocab = vocabulary_strings()
tic = rllc_tokens_in_context(cfg, inputs, ablation)
patterns = classify_tokens_in_context(tic, ablation.tic_tokens, vocab)
fractions = pattern_fractions(tic, patterns)
fractions["head class (probes)"] = classes
display(fractions.round(3))

# %% [markdown]
# ## Clustering the per-head curves (App. F.5, Figs. 18–19)
# Per layer, the training-distribution wrLLC and code wdrLLC curves of each head concatenated;
# Euclidean K-means, Ward and K-means on z-normalised curves (shape, = correlation distance); c = 2–4.
# With 8 heads per layer the cluster-quality scores are unreliable (the paper says so too).
# Our choice: a data set with more than 10% of its estimates flagged (e.g. *escape* — SGLD finds a
# lower loss than w*'s) is left out of the clustering, so flagged values cannot drive the clusters.

# %%
flag_share = heads_frame.assign(flagged=heads_frame["flags"] != "").groupby("data")["flagged"].mean()
cluster_data = [d for d in ["train", *head_domains] if flag_share.get(d, 0) <= 0.1] or ["train"]
print("clustering on:", cluster_data, "| flagged share per data set:", flag_share.round(2).to_dict())
cluster_rows = []
fig, axes = plt.subplots(1, lm.model.n_layers, figsize=(5 * lm.model.n_layers, 3.2), squeeze=False)
for ax, layer in zip(axes[0], range(lm.model.n_layers)):
    curves, segments = curve_matrix(heads_frame, data=cluster_data, layer=layer)
    if len(curves) < 3 or curves.shape[1] < 2:
        continue
    counts = tuple(c for c in cfg.cluster_counts if c <= len(curves) - 1)
    table = cluster_table(curves, counts, segments=segments)
    table.insert(0, "layer", layer)
    cluster_rows.append(table)
    two = table[(table.method == "shape") & (table.n_clusters == min(counts))].iloc[0]
    for head in curves.index:
        ax.plot(np.arange(curves.shape[1]), curves.loc[head], lw=1, color=f"C{int(two[head])}",
                label=f"{head} ({classes[head]})")
    for edge in np.cumsum(segments)[:-1]:  # between the concatenated data sets
        ax.axvline(edge - 0.5, color="k", lw=0.6, ls=":")
    ax.set(xlabel=f"checkpoint index ({' | '.join(cluster_data)})", ylabel="wrLLC λ̂ (per head)",
           title=f"layer {layer}: heads clustered by wrLLC curve shape, c = {min(counts)}")
    ax.legend(fontsize=6, ncol=2)
fig.tight_layout()
stamp(fig)
save_figure(fig, "fig18_head_clusters", profile=cfg.name)
plt.show()
clusters = pd.concat(cluster_rows, ignore_index=True) if cluster_rows else pd.DataFrame()
clusters.round(3)

# %% [markdown]
# ## K-composition between layer-0 and layer-1 heads over training (Fig. 7)
# ‖W_QK^{1:h'} W_OV^{0:h}‖ / (‖W_QK‖ ‖W_OV‖) for every pair; the paper finds the composition of
# layer-0 and layer-1 multigram heads rising during LM4.

# %%
if lm.model.n_layers > 1:
    comp = {int(s): composition_at(probe_table, int(s), "K") for s in steps}
    multigram0 = [h for h in labels if h.startswith("0:") and classes[h] == "multigram"]
    multigram1 = [h for h in labels if h.startswith("1:") and classes[h] == "multigram"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    mean_mm = [np.mean([float(comp[s].loc[a, b]) for a in multigram0 for b in multigram1]) if multigram0 and multigram1
               else np.nan for s in comp]
    mean_all = [float(np.nanmean(comp[s].to_numpy())) for s in comp]
    plot_over_training(axes[0], list(comp), {"multigram 0 → multigram 1 (mean)": mean_mm, "all pairs (mean)": mean_all},
                       ylabel="K-composition score", marker="o", ms=2.5,
                       title="mean K-composition over training")
    im = axes[1].imshow(comp[final].to_numpy(dtype=float), cmap="viridis")
    axes[1].set(xticks=range(len(comp[final].columns)), xticklabels=comp[final].columns,
                yticks=range(len(comp[final].index)), yticklabels=comp[final].index,
                xlabel="layer-1 head (reader)", ylabel="layer-0 head (writer)", title=f"K-composition at step {final:,}")
    fig.colorbar(im, ax=axes[1], label="K-composition score")
    fig.tight_layout()
    stamp(fig)
    save_figure(fig, "fig7_k_composition", profile=cfg.name)
    plt.show()

# %% [markdown]
# ## The paper's findings against this run
# Each row is computed from the tables above (nothing typed in by hand).

# %%
def _end_spread(layer):
    return float(spread[f"layer {layer} CV"].iloc[-1]), float(spread[f"layer {layer} CV"].iloc[0])

findings = []
cv_end, cv_start = _end_spread(0)
findings.append({"finding": "per-head wrLLC curves differentiate over training (layer-0 CV grows)",
                 "ours": f"CV {cv_start:.2f} → {cv_end:.2f}", "holds": cv_end > cv_start})
if lm.model.n_layers > 1:
    cv_end1, cv_start1 = _end_spread(1)
    findings.append({"finding": "… and in layer 1", "ours": f"CV {cv_start1:.2f} → {cv_end1:.2f}",
                     "holds": cv_end1 > cv_start1})
by_class = pd.concat([ratio, classes.rename("class")], axis=1).groupby("class")["code/train"].mean()
for cls, want in (("multigram", "lower"), ("induction", "higher")):
    if cls in by_class:
        value = float(by_class[cls])
        findings.append({"finding": f"{cls} heads: drLLC on code {want} than on train",
                         "ours": f"mean code/train {value:.2f}", "holds": value < 1 if want == "lower" else value > 1})
    else:
        findings.append({"finding": f"{cls} heads: drLLC on code {want} than on train",
                         "ours": f"no {cls} heads in this run", "holds": None})
n_induction = int((classes == "induction").sum())
findings.append({"finding": "two induction heads form in layer 1", "ours": f"{n_induction} induction heads",
                 "holds": n_induction >= 2})


def smallest_shape_row(layer):
    """The shape-method clustering of ``layer`` at its smallest c (a row of ``clusters``), or None."""
    rows_l = clusters[(clusters.method == "shape") & (clusters.layer == layer)] if len(clusters) else clusters
    return rows_l[rows_l.n_clusters == rows_l.n_clusters.min()].iloc[0] if len(rows_l) else None


def layer_members(row, layer):
    return {h: int(row[h]) for h in labels if h.startswith(f"{layer}:") and h in row.index}


def induction_in_own_cluster(layer):
    """Whether the layer's induction heads make up one cluster of their own (None without them)."""
    row = smallest_shape_row(layer)
    induction = [h for h in labels if h.startswith(f"{layer}:") and classes[h] == "induction"]
    if row is None or not induction:
        return None
    members = layer_members(row, layer)
    ids_in = {members[h] for h in induction}
    ids_out = {c for h, c in members.items() if h not in induction}
    return len(ids_in) == 1 and not ids_in & ids_out


if lm.model.n_layers > 1:
    own1, row1 = induction_in_own_cluster(1), smallest_shape_row(1)
    findings.append({"finding": "layer-1 induction heads separate first: a cluster of their own at the smallest c",
                     "ours": "no induction heads" if own1 is None else
                     f"c = {int(row1.n_clusters)}: " + ", ".join(f"{h} -> {c}" for h, c in layer_members(row1, 1).items()),
                     "holds": own1})
pd.DataFrame(findings)

# %% [markdown]
# ### Are the clusters resolved by the SGLD budget?
# Each per-head estimate averages the profile's chains. Clustering each chain's curves alone (shape
# method, the smallest c, the same data sets) and comparing with the clustering of the mean says
# whether the partition survives the chains' noise: an adjusted Rand index (ARI) of 1 is the same
# partition, ~0 chance. The chains share their minibatches, so this is a lower bound on the noise.

# %%
from stagewise.clustering import chain_split_clusters

chain_split = {}
for layer in range(lm.model.n_layers):
    row = smallest_shape_row(layer)
    if row is None or cfg.sgld.num_chains < 2:
        continue
    split = chain_split_clusters(heads_frame, int(row.n_clusters), data=cluster_data, layer=layer)
    chain_split[f"layer_{layer}"] = {"n_clusters": int(row.n_clusters), "agreement": split["agreement"]}
    print(f"layer {layer}, c = {int(row.n_clusters)}: ARI of each chain's partition against the mean's:",
          ", ".join(f"{a:.2f}" for a in split["agreement"]))
    display(pd.DataFrame({"mean": split["mean"], **{f"chain {c}": lab for c, lab in enumerate(split["chains"])}}).T)

# %% [markdown]
# ## SGLD calibration (App. D.3.3)
# Each per-head estimate rests on the profile's short chains (Wang et al.: 4 chains × 200 draws of
# 100 contexts). As in App. D.3.3 (and Wang et al. App. F), for one head — the first induction head,
# else the last layer's head with the largest final wrLLC — at three checkpoints of its curve (the
# first reaching a quarter of its peak, the peak, the last): a grid over ε × γ of short chains of
# that head's weights (nβ kept), each classified *diverged*, *escape* (loss below ℓ(w*)), *stalled*
# (still drifting or chains disagreeing) or *good*; and at the profile's setting one chain five
# times as long with the same seed, against which the profile's estimate is read. Once for the
# wrLLC (training data) and once for the wdrLLC on the first head domain (nβ = 30): whether its
# escapes go away with a larger γ (a calibration problem) or not (w* is no minimum of that loss).
# Then every per-head estimate flagged *unconverged* or with a flagged chain.

# %%
from stagewise.headline import snake_case
from stagewise.llc import convergence_summary, flagged_checkpoints, save_calibration_figures
from stagewise.refined import head_sgld_calibration

t0 = time.perf_counter()
induction = [h for h in labels if classes[h] == "induction"]
last = wr[(wr["layer"] == lm.model.n_layers - 1) & (wr["step"] == final)]
cal_head = induction[0] if induction else str(last.sort_values("llc_mean")["head"].iloc[-1])
states = {int(s): path for s, path in checkpoints}
cal_domain = head_domains[0]
calibrations = {}
for name, frame, dataset, sgld in (("wrLLC", wr, data["train"], cfg.sgld),
                                   (f"wdrLLC {cal_domain}", wdr[wdr["data"] == cal_domain], data[cal_domain], dr_cfg)):
    cal = head_sgld_calibration(f"head {cal_head} {name}", cal_head, frame, states, model_fn, loss, dataset, sgld,
                                cfg.sgld_calibration, compute_dtype=lm.sgld_dtype)
    calibrations[name] = cal
    save_calibration_figures(cal, f"rllc_{snake_case(name)}", setting, profile=cfg.name)
    plt.show()
    print(cal.long_table().drop(columns="profile_chains").round(3).to_string(index=False))
    print("usable (good at every calibration checkpoint), rows (nβ, γ), columns ε:")
    print(cal.usable())
    print(cal.sentence())
print(f"calibration in {time.perf_counter() - t0:.0f} s")
flagged_heads = flagged_checkpoints(heads_frame)
head_convergence = convergence_summary(heads_frame)
print(f"{len(flagged_heads)} of {len(heads_frame)} per-head estimates flagged "
      f"({head_convergence['unconverged']} unconverged)")
if len(flagged_heads):
    print(flagged_heads.round(3).to_string(index=False))

# %% [markdown]
# ## Headline numbers as data
# Written to `04_rllc_heads.json` beside this profile's figures: per head its class
# (probes at the final checkpoint), final scores and final wrLLC / wdrLLC; per layer the spread
# (CV) of the wrLLC curves at the first and last checkpoint; whether the clustering (shape method,
# smallest c) puts the induction heads, if any, in a cluster of their own; the whole-model drLLC at
# the last checkpoint per data set; the findings table; the share of flagged estimates.

# %%
from stagewise.headline import snake_case, write_headline

cluster_summary = {}
for layer in range(lm.model.n_layers):
    row = smallest_shape_row(layer)
    if row is None:
        continue
    cluster_summary[f"layer_{layer}"] = {"n_clusters": int(row.n_clusters), "silhouette": float(row.get("silhouette", np.nan)),
                                         "clusters": {f"head_{h.replace(':', '_')}": c for h, c in layer_members(row, layer).items()},
                                         "induction_heads_in_own_cluster": induction_in_own_cluster(layer),
                                         "chain_split": chain_split.get(f"layer_{layer}")}
final_llc = heads_frame[heads_frame.step == final].pivot_table(index="head", columns="data", values="llc_mean")
headline = {
    "language_profile": lm.name, **lm.data_record(),
    "checkpoints": [int(s) for s in steps], "final_step": final,
    "heads": {f"head_{h.replace(':', '_')}": {"class": str(classes[h]),
                                              "previous_token": float(scores.loc[h, "previous_token"]),
                                              "prefix_matching": float(scores.loc[h, "prefix_matching"]),
                                              **{f"llc_{snake_case(d)}": float(final_llc.loc[h, d]) for d in final_llc.columns}}
              for h in labels},
    "wrllc_cv": {f"layer_{c.split()[1]}": {"first": float(spread[c].iloc[0]), "last": float(spread[c].iloc[-1])}
                 for c in spread.columns},
    "clustering": cluster_summary, "clustered_on": cluster_data,
    "whole_model_drllc_final": {snake_case(name): float(g.set_index("step").loc[final, "llc_mean"])
                                for name, g in whole.groupby("data")},
    "flagged_share": {snake_case(k): float(v) for k, v in flag_share.items()},
    "sgld_calibration": {"head": cal_head, **{snake_case(k): c.to_record() for k, c in calibrations.items()},
                         "sweep": head_convergence},
    "findings": [{"finding": f["finding"], "ours": f["ours"], "holds": f["holds"]} for f in findings],
}
print(f"headline numbers: {write_headline('04_rllc_heads', cfg.name, headline, time.perf_counter() - notebook_start)}")
