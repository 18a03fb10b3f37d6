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
# # 01 — Stagewise development of a two-layer attention-only language model
#
# Main paper §5 and App. B: a 3.36M-parameter attention-only transformer (TransformerLens
# `HookedTransformer`, Shortformer positional embedding, 5k truncated GPT-2 vocabulary) passes
# through stages LM1–LM5 — bigrams, n-grams and positional information, previous-token heads,
# induction heads, convergence — which the LLC finds as plateaus of λ̂(w_t) (Fig. 1a), each stage
# confirmed by a behavioural or structural probe (Fig. 4, App. B).
#
# **Data.** The paper trained on DSIR-filtered Pile (a hub dataset). With no hub access, the default
# corpus is built offline from public-domain / openly licensed English text shipped in registry
# packages (`stagewise.data.corpus`; sources, versions and licences in its manifest). The hub
# loader is kept: set `corpus=CorpusConfig(source="hub", ...)` in the profile.
#
# **Scale.** `paper` is the paper's run (context 1024, batch 100, 50k steps ≈ 5B tokens). The
# `cpu` profile trains the same architecture at context 256 and batch 8 for a few thousand steps
# (≈ 10M tokens, 500× fewer than the paper), which a 2-core CPU does in ~20 minutes: enough for LM1
# and LM2, not for the induction circuit (docs/results/pilots.md records what we measured). Everything the
# paper computes is computed here at every profile; the stage-signature table at the end says which
# signatures appear.
#
# **`long`: an analogue of the paper's data, named in every title.** On plain text no pilot formed an
# induction head on a CPU (44M tokens). `long` trains the same model at context 128 on the same text,
# half of whose contexts repeat two passages of their own text four times each at random places,
# after a first 3,000 steps on 32-token contexts (a context-length curriculum): the recipe the
# induction-head pilots (docs/results/pilots.md) found, which forms a layer-0 previous-token head and a layer-1
# induction head at ~7M tokens. The probes and the ICL score read the plain validation text only;
# the LLC's SGLD data carry the same repeats as training (the distribution the model is trained on).

# %% tags=["parameters"]
profile = None  # smoke, cpu, long or paper; None reads STAGEWISE_PROFILE, else cpu
one_layer = True  # also train and analyse the one-layer model (App. B.5, Figs. B.6-B.7)
seeds = None  # training seeds of Fig. B.1a (the first is the main run); None keeps the profile's
dask_scheduler = None  # Dask scheduler address for the LLC sweeps; None reads $STAGEWISE_DASK_SCHEDULER, else in-process

# %%
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from stagewise.cluster import sweep_executor
from stagewise.data.corpus import corpus_manifest
from stagewise.data.language import load_contexts, load_token_stream
from stagewise.models.language import make_language_model
from stagewise.plotting import (apply_style, plot_over_training, plot_stages, plot_token_loss_change, save_figure,
                                shade_stages)
from stagewise.probes.language import (bigram_distribution, classify_heads, composition_at, head_scores_at,
                                       icl_tokens, lm_probe_checkpoints, lm_probe_config, ngram_entropies,
                                       per_token_loss_change, positional_embedding_pca)
from stagewise.probes.language_signatures import (LM_PAPER_NUM_STEPS, LM_PAPER_STAGES, PRE_LM1, add_derived_columns,
                                                  first_resolved_step, lm_paper_signatures, name_lm_stages)
from stagewise.probes.regression_signatures import boundary_table, signature_table
from stagewise.profiles import default_profile, get_profile
from stagewise.runs import language_analysis_steps, language_llc, language_run
from stagewise.stages import detect_stages

notebook_start = time.perf_counter()
profile = profile or default_profile()
llc_executor = sweep_executor(dask_scheduler)  # 'serial', or a Client of that scheduler
cfg = get_profile("language", profile, **({"seeds": tuple(seeds)} if seeds is not None else {}))
# every title names the profile and, where the data are an analogue of the paper's, that
setting = f"{cfg.name} profile" + (f"\n{textwrap.fill(cfg.analogue, 110)}" if cfg.analogue else "")
apply_style()
n_params = sum(p.numel() for p in make_language_model(cfg.model).parameters())
print(f"profile {cfg.name}: {cfg.model.n_layers}-layer model, {n_params:,} parameters, context {cfg.model.n_ctx}, "
      f"batch {cfg.batch_size}, {cfg.train.num_steps:,} steps ({cfg.train.num_steps * cfg.tokens_per_step / 1e6:.1f}M tokens)")
print(f"LLC: {cfg.sgld}, loss at every {cfg.sgld_stride} position(s)")
print(cfg.analogue or "data: the corpus's plain text (the paper's kind of data)")

# %% [markdown]
# ## Corpus
# Unigram entropy and bigram conditional entropy of the training stream are the reference levels of
# stage LM1; the empirical bigram distribution q̃ is what the bigram score (eqs. 11–12) compares with.

# %%
train_stream = load_token_stream(cfg.corpus, "train")
manifest = corpus_manifest(cfg.corpus)
print(f"train tokens: {len(train_stream):,}")
for pkg in manifest.get("packages", []):
    print(f"  {pkg['registry']} {pkg['name']} {pkg.get('version', '')}: {pkg['licence']}")
H = ngram_entropies(train_stream, cfg.model.d_vocab)
bigrams = bigram_distribution(train_stream, cfg.model.d_vocab)
print(f"unigram entropy {H.unigram:.3f} nats, bigram conditional entropy {H.bigram:.3f} nats")

# %% [markdown]
# ## Training (AdamW, lr 0.001, weight decay 0.05, no schedule; App. D.1)
# Cached by configuration; an interrupted run resumes from its last saved state.

# %%
t0 = time.perf_counter()
run = language_run(cfg)
print(f"{len(run.checkpoint_steps)} checkpoints; {time.perf_counter() - t0:.0f} s here "
      f"(training took {run.seconds / 60:.1f} min when it ran)")
steps = language_analysis_steps(cfg, run)
print(f"analysis checkpoints ({len(steps)}): {steps.tolist()}")

# %% [markdown]
# ## Probes at every analysis checkpoint (App. B)
# Validation loss (plain and with the positional embedding zero-ablated, per position), bigram and
# n-gram scores, ICL score, positional-embedding PCA, previous-token / current-token / prefix-matching
# scores per head on synthetic sequences, and Q/K/V composition scores between the layers. Cached
# per checkpoint.

# %%
t0 = time.perf_counter()
val = load_contexts(cfg.corpus, "validation", cfg.model.n_ctx).long()
probe_cfg = lm_probe_config(cfg.name)
table = add_derived_columns(lm_probe_checkpoints(run.load_model, steps, val, bigrams, probe_cfg))
print(f"probes at {len(steps)} checkpoints in {time.perf_counter() - t0:.0f} s (cached rows load instantly)")

# %% [markdown]
# ## LLC over training and automatic stages (Fig. 1a / B.2)
# SGLD at the paper's ε = 0.001, γ = 100, nβ = 21.7 (App. D.1.4) with the profile's chains, draws
# and batch; SGLD batches come from the held-out `sgld` split, with the same seed (noise and batch
# order) at every checkpoint. Chains flagged NaN or diverging are excluded from the mean and printed.
# Stage boundaries: GP on log t, App. A.5 (`stagewise.stages`). Our choice, where the paper is
# silent: a flat stretch at the end of the run (|slope| below the tolerance) also ends a stage
# (`edge_plateaus=True`) — the paper's LM1 ends in such a plateau of the LLC.

# %%
t0 = time.perf_counter()
sweep = language_llc(cfg, run, steps, executor=llc_executor)
print(f"LLC at {len(sweep.steps)} checkpoints in {time.perf_counter() - t0:.0f} s (cached estimates load instantly); "
      f"flagged chains: {sweep.diagnostics or 'none'}")

keep = sweep.steps > 0
t_llc = sweep.steps[keep]
llc, llc_sem = sweep.llc_mean[keep], (sweep.llc_sem[keep] if cfg.sgld.num_chains > 1 else None)
stages = detect_stages(t_llc, llc, stds=llc_sem, edge_plateaus=True)
norms = np.array([torch.cat([p.detach().flatten() for p in run.load_model(s).parameters()]).norm().item() for s in t_llc])
val_loss = table.set_index("step").loc[t_llc, "loss"].to_numpy()
fig = plot_stages(stages, t_llc, llc, stds=sweep.llc_std[keep] if cfg.sgld.num_chains > 1 else None, loss=val_loss,
                  extra={"weight norm $\\|w_t\\|$ (L2)": norms}, loss_label="validation loss\n(nats/token)",
                  title=f"Two-layer attention-only LM, {setting}")
save_figure(fig, "fig1a_lm_llc", profile=cfg.name)
plt.show()
stages.summary()

# %% [markdown]
# ## Loss against the n-gram entropies (cf. Fig. B.2, loss panel)
# Stage LM1 ends when the loss approaches the bigram level (paper: the bigram score is ~0.3 nats
# above the bigram entropy at the LM1–LM2 boundary).

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
t = np.arange(1, len(run.train_loss) + 1)
ax.plot(t, run.smoothed_loss(), lw=1, label="training loss (smoothed)")
plot_over_training(ax, table.step, {"validation loss": table["loss"], "bigram score (eq. 12)": table["bigram.score"]},
                   result=stages, legend=False, marker="o", ms=2.5)
ax.axhline(H.unigram, ls="--", color="grey", lw=0.8, label="unigram entropy")
ax.axhline(H.bigram, ls=":", color="k", lw=0.8, label="bigram entropy")
ax.set(ylabel="loss (nats/token)", title=f"Two-layer LM loss, {setting}")
ax.legend(fontsize=7)
save_figure(fig, "figB2_lm_loss", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Behaviour (Fig. 4a, B.3): bigram and n-gram scores, positional embedding, in-context learning
# Top left: bigram score minus its optimum. Top right: n-gram scores ℓ_test / ℓ_gram (below 1: the
# model predicts the n-gram's last token better in real text than from the n-gram alone).
# Bottom left: validation loss with the positional embedding zero-ablated minus the plain loss, at
# several positions. Bottom right: ICL score (loss late in the context minus early; the paper's
# tokens 50 and 500 of 1,024 scaled to our context, each averaged over a ±`icl_window`-token window
# — our choice, to beat the noise of a few hundred validation contexts; band: ±2 standard errors).

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
plot_over_training(axes[0, 0], table.step, {"bigram score − optimum": table["bigram.excess"]}, result=stages,
                   ylabel="nats/token", title="bigram score minus its optimum (eq. 12)")
plot_over_training(axes[0, 1], table.step, {f"{n}-gram": table[f"ngram.{n}.score"] for n in probe_cfg.ngram_sizes},
                   result=stages, ylabel="$\\ell_{test}/\\ell_{gram}$ (ratio)",
                   title="n-gram scores (below 1: context helps)")
pos_cols = [c for c in table.columns if c.startswith("loss_at.") and not c.endswith("pos_ablated")]
plot_over_training(axes[1, 0], table.step,
                   {f"k = {c.split('.')[1]}": table[c + ".pos_ablated"] - table[c] for c in pos_cols}, result=stages,
                   ylabel="ablated − plain loss (nats/token)", legend=True,
                   title="positional embedding zero-ablated: loss change at position k")
axes[1, 0].legend(fontsize=6, ncol=2)
k1, k2 = probe_cfg.icl_tokens or icl_tokens(cfg.model.n_ctx)
plot_over_training(axes[1, 1], table.step, {f"ICL score ($\\ell_{{{k2}}} - \\ell_{{{k1}}}$)": table["icl_score"]},
                   result=stages, ylabel="nats/token", title="in-context learning score (late − early token loss)")
axes[1, 1].fill_between(table.step, table["icl_score"] - 2 * table["icl_score.sem"],
                        table["icl_score"] + 2 * table["icl_score.sem"], alpha=0.25, lw=0, label="± 2 s.e.")
axes[1, 1].legend(fontsize=7)
fig.suptitle(f"Behavioural probes, {setting}")
fig.tight_layout()
save_figure(fig, "figB3_lm_behaviour", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Structure (Fig. 4b, B.4, B.5): positional embedding, previous-token and induction heads, composition

# %%
L = cfg.model.n_layers
fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
evr_cols = [c for c in table.columns if c.startswith("pos_pca.evr.")]
plot_over_training(axes[0, 0], table.step, {f"PC{c.split('.')[-1]}": table[c] for c in evr_cols},
                   result=stages, ylabel="explained variance ratio",
                   title="positional embedding: variance explained by its top PCs")
for ax, prefix, title in ((axes[0, 1], "previous_token", "previous-token score"),
                          (axes[1, 0], "prefix_matching", "prefix-matching score")):
    for layer, color in zip(range(L), ("tab:blue", "tab:red")):
        cols = [c for c in table.columns if c.startswith(f"{prefix}.{layer}:")]
        plot_over_training(ax, table.step, {c.split(".")[1]: table[c] for c in cols}, legend=False, color=color,
                           lw=0.8, alpha=0.8, result=stages if layer == 0 else None)
    ax.axhline(table[f"{prefix}.chance"].iloc[0], color="k", ls=":", lw=0.8)
    ax.set_ylabel(title)
    ax.set_title(f"{title} per head (blue: layer 0, red: layer 1; dotted: chance)", fontsize=8)
if L >= 2:
    k_cols = [c for c in table.columns if c.startswith("K_composition.")]
    top = table[k_cols].iloc[-1].sort_values(ascending=False).index[:6]
    plot_over_training(axes[1, 1], table.step, {c.split(".", 1)[1]: table[c] for c in top}, result=stages,
                       ylabel="K-composition score", title="K-composition of layer-0 into layer-1 heads")
    axes[1, 1].legend(fontsize=6, title="top 6 at the end", title_fontsize=6)
fig.suptitle(f"Structural probes, {setting}")
fig.tight_layout()
save_figure(fig, "fig4b_lm_structure", profile=cfg.name)
plt.show()

# %% [markdown]
# ### Head classification at the end of training
# Previous-token / current-token heads attend mostly to the previous / current token of random
# sequences; induction heads have a high prefix-matching score; the rest are "multigram" heads.
# Thresholds (stated in `stagewise.probes.language_structure`): 0.4 for previous/current-token
# (≥ 12× chance), 0.3 for induction (≥ 28× chance).

# %%
head_table = classify_heads(head_scores_at(table, int(table.step.max())))
head_table

# %% [markdown]
# ### Positional embedding (Fig. B.4): PCA and norms at the last checkpoint

# %%
pca = positional_embedding_pca(run.load_model(int(steps[-1])))
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(pca.scores[:, 0], pca.scores[:, 1], lw=0.8)
axes[0].scatter(pca.scores[:, 0], pca.scores[:, 1], c=np.arange(len(pca.scores)), s=5, cmap="viridis")
axes[0].set(xlabel=f"PC1 ({100 * pca.explained_variance_ratio[0]:.1f}%)",
            ylabel=f"PC2 ({100 * pca.explained_variance_ratio[1]:.1f}%)",
            title="positional embedding, PCA (colour: position, dark = first)")
fig.suptitle(setting, y=1.02, fontsize=8)
axes[1].plot(pca.norms, lw=1)
axes[1].set(xlabel="position (token index)", ylabel="L2 norm", title="positional embedding norm per position")
save_figure(fig, "figB4_lm_positional_embedding", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Detected stages against the paper's (LM1–LM5 at 900 / 6.5k / 8.5k / 17k of 50k steps)
# Our stages are named after the paper's by order and LLC direction (`name_lm_stages`). Stages that
# end before step 100 are labelled *pre-LM1*: the paper analysed checkpoints every 100 steps
# (App. D.1), so an early transient of the LLC (our cpu run rises to step ~11 and dips until ~24)
# has no counterpart in its figures and must not be read as its LM3 decrease. The signature
# table asks, for every stage's named change, whether it happens in our run and in which of our
# stages, reading the probes from step 100 on for the same reason (before that the ICL score and
# the n-gram scores swing while the model learns unigram statistics; none of it is in the paper). `rescaled` multiplies the paper's step by our steps / 50k — only a guide: our batch holds
# 2k tokens against the paper's 100k, so stages need not scale with steps.

# %%
first_resolved = first_resolved_step(steps[-1])  # 100; 0 for runs under 1,000 steps (smoke)
labels = name_lm_stages(stages.stages, first_resolved_step=first_resolved)
print("detected boundaries:", np.round(stages.boundaries).astype(int).tolist(),
      "| directions:", [s.direction for s in stages.stages])
if labels is None:
    print("the detected stages' LLC directions do not match the paper's sequence LM1..LM5 (+ + − + +): "
          "stages are numbered, not named")
    labels = [(f"stage {i + 1}",) for i in range(len(stages.stages))]
else:
    display(boundary_table(stages.boundaries, stages.intervals, labels, cfg.train.num_steps,
                           paper=LM_PAPER_STAGES, paper_num_steps=LM_PAPER_NUM_STEPS))
resolved = table[table.step >= first_resolved]  # the checkpoints the paper could see (App. D.1)
signatures = signature_table(resolved, lm_paper_signatures(L), stages.boundaries, labels)
signatures[["paper stage", "signature", "paper when", "appears", "step", "our stage", "our stage name", "effect"]]

# %% [markdown]
# ## The induction circuit judged by content, against the stage boundaries (LM3–LM4)
# An induction score on `BOS + R + R` can be earned by a head that copies from a fixed distance
# back (docs/results/pilots.md, *the fixed-offset trap*), so the circuit is judged by three content-based probes:
# the largest **layer-0 previous-token score** (App. B.4.3; threshold 0.4), the largest **layer-1
# prefix-matching score** (App. B.4.4; threshold 0.3), and the **loss drop on a repeat at a random
# offset** (a 20-token segment copied from a random place of the first half of 128 random tokens to
# a random place of the second half; threshold 1 nat). *Formed* = all three at two consecutive
# analysed checkpoints. The ICL score (loss late − early in the context, paper's LM4 drop) is read on
# the plain validation text only.

# %%
from stagewise.probes.language_structure import (INDUCTION_THRESHOLD, OFFSET_DROP_THRESHOLD, PREVIOUS_TOKEN_THRESHOLD,
                                                 induction_circuit_formation)
from stagewise.runs import language_offset_drops

circuit = pd.DataFrame({
    "step": table.step.to_numpy(),
    "previous_token_l0": table[[c for c in table.columns if c.startswith("previous_token.0:")]].max(axis=1).to_numpy(),
    "prefix_matching_l1": (table[[c for c in table.columns if c.startswith("prefix_matching.1:")]].max(axis=1).to_numpy()
                           if L >= 2 else np.full(len(table), np.nan)),
    "random_offset_drop": language_offset_drops(cfg, run, table.step),
    "icl_score": table["icl_score"].to_numpy()}).set_index("step")
tests = {"previous_token_l0": PREVIOUS_TOKEN_THRESHOLD, "prefix_matching_l1": INDUCTION_THRESHOLD,
         "random_offset_drop": OFFSET_DROP_THRESHOLD}
seen = circuit[circuit.index >= first_resolved]
formation = induction_circuit_formation(seen.index, *(seen[k] for k in tests))
first_cross, formed_at = formation["first_step_above"], formation["formed_step"]
print("first analysed step above each threshold:", first_cross, "| formed (all three, twice):", formed_at)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.0), sharex=True)
for ax, (col, label) in zip(axes, [("previous_token_l0", "layer-0 previous-token score (max)"),
                                   ("prefix_matching_l1", "layer-1 prefix-matching score (max)"),
                                   ("random_offset_drop", "loss drop on a random-offset repeat (nats)"),
                                   ("icl_score", "ICL score on plain text (nats)")]):
    plot_over_training(ax, circuit.index, {label: circuit[col]}, result=stages, legend=False, marker="o", ms=2.5,
                       title=label, color="k")
    if col in tests:
        ax.axhline(tests[col], color="tab:red", ls=":", lw=1)
    if formed_at is not None:
        ax.axvline(formed_at, color="tab:green", lw=1.2)
fig.suptitle(f"The induction circuit by content (dotted: thresholds; green: formed), {setting}", fontsize=9)
fig.tight_layout()
save_figure(fig, "fig4_lm_induction_by_content", profile=cfg.name)
plt.show()

# each LLC boundary against the steps at which the heads formed (ratio > 1: the boundary comes later)
events = {"layer-0 previous-token head": first_cross["previous_token_l0"],
          "layer-1 prefix-matching head": first_cross["prefix_matching_l1"],
          "random-offset drop >= 1 nat": first_cross["random_offset_drop"], "circuit formed (all three)": formed_at}
boundary_vs_heads = pd.DataFrame([{"boundary": round(b), "between": f"{'+'.join(a)} | {'+'.join(c)}",
                                   **{e: (None if t is None else round(b / t, 2)) for e, t in events.items()}}
                                  for b, a, c in zip(stages.boundaries, labels, labels[1:])])
icl_before = float(circuit.loc[circuit.index <= formed_at, "icl_score"].iloc[-1]) if formed_at else None
icl_end = float(circuit["icl_score"].iloc[-1])
print("boundary / formation step (columns: events at", {e: t for e, t in events.items()}, ")")
print(f"ICL score at formation {icl_before}, at the end {icl_end:.3f}")
boundary_vs_heads

# %% [markdown]
# ## Essential dynamics: forms against the LLC's boundaries ([DL] §3.2, Fig. 2a)
# The papers' second witness of stages. *Behavioural ED*: a_t = log p(next token) of every
# checkpoint at every 4th position of 32 fixed validation contexts (2,048 numbers at context 256;
# `stagewise.runs.language_outputs`), PCA over the checkpoints, the top 3 PCs smoothed along
# training, osculating circles (grey) and the evolute (black) in each PC plane. A *form* is a
# turning point of the trajectory at which every PC plane has a vertex. The paper finds two in its
# language model: at the LM2|LM3 and LM4|LM5 boundaries (the second one the induction mechanism).
#
# *Our choices* (the papers' App. B.8 is not in our sources; the reasons are in
# `stagewise.essential_dynamics`): the same settings as notebook 02, fixed once on synthetic
# trajectories: the trajectory parametrised by log(step + 1) and smoothed by a local-linear
# Gaussian kernel of 0.1 decade; a turning point counts when the chords 0.3 decade into and out of
# it make ≥ 30° and are each ≥ 10 standard errors long. A form corroborates an LLC boundary when
# it lies within a factor 1.5 of it in steps. Boundaries before the paper's first analysed
# checkpoint (step 100, *pre-LM1*) are listed but have no counterpart in the paper.

# %%
from stagewise.essential_dynamics import essential_dynamics, forms_against_boundaries
from stagewise.plotting import plot_ed_over_training, plot_essential_dynamics
from stagewise.runs import language_outputs

t0 = time.perf_counter()
ed_steps, ed_outputs = language_outputs(cfg)
ed = essential_dynamics(ed_outputs, ed_steps)
print(f"outputs {ed_outputs.shape[1:]} at {len(ed_steps)} checkpoints in {time.perf_counter() - t0:.0f} s (cached); "
      f"PCA explains {ed.pca.explained_variance_ratio.sum():.0%} "
      f"({', '.join(f'{v:.0%}' for v in ed.pca.explained_variance_ratio)})")
ed_matches = forms_against_boundaries([f.step for f in ed.forms], stages.boundaries) if len(stages.boundaries) else []
boundary_names = {round(b): f"{'+'.join(a)} | {'+'.join(b_)}" for b, a, b_ in zip(stages.boundaries, labels, labels[1:])}
print(f"{len(ed.forms)} form(s) at steps {[round(f.step) for f in ed.forms]} (turns {[round(f.turn) for f in ed.forms]} degrees)")
pd.DataFrame([{"LLC boundary": round(m["boundary"]), "between": boundary_names.get(round(m["boundary"]), ""),
               "nearest form": None if m["nearest_form"] is None else round(m["nearest_form"]),
               "form / boundary": None if m["ratio"] is None else round(m["ratio"], 2),
               "corroborated (within x1.5)": m["corroborated"]} for m in ed_matches])

# %%
fig = plot_essential_dynamics(ed, stages=stages,
                              title=f"Essential dynamics of the two-layer LM (top 3 PCs; colour: the LLC's stages; "
                                    f"stars: forms), {setting}")
save_figure(fig, "fig2a_lm_essential_dynamics", profile=cfg.name)
plt.show()
fig = plot_ed_over_training(ed, stages=stages,
                            title=f"Essential dynamics of the two-layer LM over training, {setting}")
save_figure(fig, "fig2a_lm_ed_over_training", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Per-token loss change over each named stage (Fig. 5)
# As in the paper's Fig. 5, a validation text with each token coloured by how much its loss changed
# from the start to the end of a stage (the nearest analysed checkpoints): red tokens became easier
# to predict. One figure per stage named after the paper's (the pre-LM1 transient is skipped).

# %%
text = val[0, : min(160, cfg.model.n_ctx)][None]
named = [(st, "+".join(lab)) for st, lab in zip(stages.stages, labels) if lab != (PRE_LM1,)]
for st, name in named or [(stages.stages[-1], "last stage")]:
    t_before, t_after = (int(steps[np.argmin(np.abs(steps - t))]) for t in (st.start, st.end))
    change = per_token_loss_change(run.load_model(t_before), run.load_model(t_after), text)
    fig = plot_token_loss_change(change.token.tolist(), change.change.to_numpy(), width=90,
                                 title=f"{name}: loss change from step {t_before:,} to {t_after:,}, {setting}")
    save_figure(fig, f"fig5_lm_loss_change_{name.replace('+', '_').replace(' ', '_')}", profile=cfg.name)
    plt.show()

# %% [markdown]
# ## Other seeds (Fig. B.1a)
# The paper's five seeds differ in initialisation and batch order; each shows LM1–LM4. Every seed is
# trained, its LLC estimated at the same analysis checkpoints and its stages detected (skipped when
# the profile lists one seed, as `cpu` does: one more run costs ~20 min there).

# %%
if len(cfg.seeds) > 1:
    fig, axes = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for seed in cfg.seeds:
        cfg_s = cfg.with_seed(seed)
        run_s = language_run(cfg_s)
        sweep_s = language_llc(cfg_s, run_s, executor=llc_executor)
        ks = sweep_s.steps > 0
        stages_s = detect_stages(sweep_s.steps[ks], sweep_s.llc_mean[ks], edge_plateaus=True)
        print(f"seed {seed}: boundaries {np.round(stages_s.boundaries).astype(int).tolist()}, "
              f"flagged chains: {sweep_s.diagnostics or 'none'}")
        axes[0].plot(np.arange(1, len(run_s.train_loss) + 1), run_s.smoothed_loss(), lw=1, label=f"seed {seed}")
        axes[1].plot(sweep_s.steps[ks], sweep_s.llc_mean[ks], "o-", ms=2, lw=1, label=f"seed {seed}")
    axes[0].set(xscale="log", ylabel="training loss (nats/token)", title="training loss of every seed (smoothed)")
    axes[1].set(xscale="log", xlabel="training step $t$", ylabel="LLC $\\hat\\lambda(w_t)$", title="LLC of every seed")
    axes[0].legend(fontsize=7)
    fig.suptitle(setting, fontsize=8)
    save_figure(fig, "figB1a_lm_seeds", profile=cfg.name)
    plt.show()

# %% [markdown]
# ## The one-layer model (App. B.5, Figs. B.6–B.7)
# Same data and training, L = 1, the paper's one-layer SGLD settings (ε = 0.003, γ = 300). Without
# a second layer there is no induction circuit: the paper finds bigram and skip-trigram stages only.

# %%
if one_layer:
    cfg1 = cfg.one_layer()
    run1 = language_run(cfg1)
    steps1 = language_analysis_steps(cfg1, run1)
    sweep1 = language_llc(cfg1, run1, steps1, executor=llc_executor)
    table1 = add_derived_columns(lm_probe_checkpoints(run1.load_model, steps1, val, bigrams, probe_cfg))
    k1 = sweep1.steps > 0
    stages1 = detect_stages(sweep1.steps[k1], sweep1.llc_mean[k1],
                            stds=sweep1.llc_sem[k1] if cfg1.sgld.num_chains > 1 else None, edge_plateaus=True)
    fig = plot_stages(stages1, sweep1.steps[k1], sweep1.llc_mean[k1],
                      loss=table1.set_index("step").loc[sweep1.steps[k1], "loss"].to_numpy(),
                      extra={"bigram score − optimum\n(nats/token)": table1.set_index("step").loc[sweep1.steps[k1], "bigram.excess"].to_numpy()},
                      loss_label="validation loss\n(nats/token)", title=f"One-layer attention-only LM, {setting}")
    save_figure(fig, "figB6_lm1_llc", profile=cfg.name)
    plt.show()
    print("one-layer boundaries:", np.round(stages1.boundaries).astype(int).tolist(),
          f"| flagged chains: {sweep1.diagnostics or 'none'}")
    resolved1 = table1[table1.step >= first_resolved_step(steps1[-1])]
    display(signature_table(resolved1, lm_paper_signatures(1), stages1.boundaries)[
        ["paper stage", "signature", "appears", "step", "our stage", "effect"]])

# %% [markdown]
# ## SGLD calibration (App. D.3.3)
# The LLC curve above rests on short chains (the profile's budget, far below the paper's 20 × 200
# draws of 100 contexts). As in App. D.3.3, at representative checkpoints (the first, the LLC's
# peak, the step before the boundary nearest the middle of the run in log steps): a grid over
# ε × nβ of short chains (γ kept), each classified *diverged*, *escape*, *stalled* (still drifting
# or chains disagreeing) or *good*; and at the profile's setting one chain five times as long with
# the same seed, whose first draws are the profile's chain 0, against which the profile's estimate
# is read (its settled value: the mean of its second half). Then the estimates of the main sweep
# flagged *unconverged* or with a flagged chain (`stagewise.llc.estimate_convergence`).

# %%
from stagewise.llc import save_calibration_figures
from stagewise.runs import language_sgld_calibration

t0 = time.perf_counter()
calibration = language_sgld_calibration(cfg, sweep, stages.boundaries, run=run)
t_calibration = time.perf_counter() - t0
# the figures name the profile, and the analogue data where the profile has them
save_calibration_figures(calibration, "lm", setting, profile=cfg.name)
plt.show()
print(calibration.long_table().drop(columns="profile_chains").round(3).to_string(index=False))
print("usable (good at every calibration checkpoint), rows (nβ, γ), columns ε:")
print(calibration.usable())
flagged = sweep.flagged_checkpoints()
print(f"{len(flagged)} of {len(sweep.steps)} estimates of the LLC curve flagged ({len(sweep.unconverged_steps)} unconverged)")
if len(flagged):
    print(flagged.round(3).to_string(index=False))
print(calibration.sentence(), f"({t_calibration:.0f} s)")

# %% [markdown]
# ## Headline numbers as data
# Written to `01_lm_stages.json` beside this profile's figures: tokens seen, the
# detected boundaries with their intervals and the LLC there, the stages named after the paper's,
# the step at which each named signature appears (null when absent), the first analysed step at
# which a layer-0 head passes the previous-token threshold and a layer-1 head the induction
# (prefix-matching) threshold, per-layer maximum head scores at the last checkpoint, and the
# one-layer model's boundaries.

# %%
from stagewise.headline import snake_case, stage_headline, write_headline


def _first_step_above(prefix: str, layer: int, threshold: float):
    cols = [c for c in table.columns if c.startswith(f"{prefix}.{layer}:")]
    above = resolved[resolved[cols].max(axis=1) >= threshold] if cols else resolved.iloc[:0]
    return float(above.step.iloc[0]) if len(above) else None


final_row = table[table.step == table.step.max()].iloc[0]
headline = {
    **cfg.data_record(),
    "steps": cfg.train.num_steps, "batch_size": cfg.batch_size, "context": cfg.model.n_ctx,
    "tokens_seen": cfg.train.num_steps * cfg.tokens_per_step, "training_s": run.seconds,
    "stages": stage_headline(stages, t_llc, llc, ["+".join(lab) for lab in labels]),
    "flagged_checkpoints": sorted(int(s) for s in sweep.diagnostics),
    "sgld_calibration": calibration.to_record(sweep),
    "signatures": [{"paper_stage": r["paper stage"], "signature": r["signature"], "appears": bool(r["appears"]),
                    "step": float(r["step"]) if r["appears"] else None, "our_stage": r["our stage name"]}
                   for _, r in signatures.iterrows()],
    "previous_token_threshold": PREVIOUS_TOKEN_THRESHOLD, "induction_threshold": INDUCTION_THRESHOLD,
    "first_step_layer0_previous_token": _first_step_above("previous_token", 0, PREVIOUS_TOKEN_THRESHOLD),
    "first_step_layer1_induction": _first_step_above("prefix_matching", 1, INDUCTION_THRESHOLD) if L >= 2 else None,
    "final_max_scores": {f"layer_{layer}": {
        kind: float(final_row[[c for c in table.columns if c.startswith(f"{kind}.{layer}:")]].max())
        for kind in ("previous_token", "prefix_matching")} for layer in range(L)},
    "chance": {"previous_token": float(table["previous_token.chance"].iloc[0]),
               "prefix_matching": float(table["prefix_matching.chance"].iloc[0])},
    "final_validation_loss": float(final_row["loss"]),
    "head_classes": {f"head_{str(k).replace(':', '_')}": str(v) for k, v in head_table.items()},
}
headline["induction_by_content"] = {
    "thresholds": {"previous_token_l0": PREVIOUS_TOKEN_THRESHOLD, "prefix_matching_l1": INDUCTION_THRESHOLD,
                   "random_offset_drop_nats": OFFSET_DROP_THRESHOLD},
    "first_step_above": first_cross, "formed_step": formed_at,
    "max": {k: float(circuit[k].max()) for k in tests},
    "icl_score_at_formation": icl_before, "icl_score_at_end": icl_end,
    "boundary_over_event_step": [{snake_case(k): v for k, v in r.items()} for r in boundary_vs_heads.to_dict(orient="records")]}
headline["essential_dynamics"] = {
    "explained_variance": [float(v) for v in ed.pca.explained_variance_ratio],
    "forms": [{"step": f.step, "turn_degrees": f.turn, "snr": f.snr,
               "plane_vertices": {f"pc{c.pair[0] + 1}_pc{c.pair[1] + 1}": c.step for c in f.cusps}} for f in ed.forms],
    "boundary_matches": ed_matches, "settings": ed.settings}
if one_layer:
    headline["one_layer"] = stage_headline(stages1, sweep1.steps[k1], sweep1.llc_mean[k1])
print(f"headline numbers: {write_headline('01_lm_stages', cfg.name, headline, time.perf_counter() - notebook_start)}")
