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
# induction heads, convergence — which the LLC finds as plateaus of λ̂(w_t).
#
# **Data.** The paper trained on DSIR-filtered Pile (a hub dataset). With no hub access, the default
# corpus is built offline from public-domain / openly licensed English text shipped in registry
# packages (`stagewise.data.corpus`; sources, versions and licences in its manifest). The hub
# loader is kept: set `corpus=CorpusConfig(source="hub", ...)` in the profile.
#
# This notebook currently trains the model at the profile's scale (cached, resumable) and draws the
# training and validation loss against the unigram and bigram entropies of the corpus. LLC, stages
# and probes follow.

# %% tags=["parameters"]
profile = None  # smoke, cpu or paper; None reads STAGEWISE_PROFILE, else cpu

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from stagewise.data.corpus import corpus_manifest
from stagewise.data.language import load_contexts, load_token_stream
from stagewise.models.language import lm_loss, make_language_model
from stagewise.plotting import apply_style, save_figure
from stagewise.probes.language import ngram_entropies, per_position_loss
from stagewise.profiles import default_profile, get_profile
from stagewise.runs import language_run

profile = profile or default_profile()
cfg = get_profile("language", profile)
apply_style()
n_params = sum(p.numel() for p in make_language_model(cfg.model).parameters())
print(f"profile {cfg.name}: {cfg.model.n_layers}-layer model, {n_params:,} parameters, context {cfg.model.n_ctx}, "
      f"batch {cfg.batch_size}, {cfg.train.num_steps:,} steps ({cfg.train.num_steps * cfg.tokens_per_step / 1e6:.1f}M tokens)")

# %% [markdown]
# ## Corpus

# %%
train_stream = load_token_stream(cfg.corpus, "train")
manifest = corpus_manifest(cfg.corpus)
print(f"train tokens: {len(train_stream):,}")
for pkg in manifest["packages"]:
    print(f"  {pkg['registry']} {pkg['name']} {pkg.get('version', '')}: {pkg['licence']}")
H = ngram_entropies(train_stream, cfg.model.d_vocab)
print(f"unigram entropy {H.unigram:.3f} nats, bigram conditional entropy {H.bigram:.3f} nats")

# %% [markdown]
# ## Training (AdamW, lr 0.001, weight decay 0.05, no schedule; App. D.1)

# %%
run = language_run(cfg)
print(f"{len(run.checkpoint_steps)} checkpoints; training took {run.seconds / 60:.1f} min "
      f"(0 if it was loaded from the cache)")

# %% [markdown]
# ## Loss over training (cf. Fig. 1a / B.2, loss panel)
# Validation loss on a fixed set of held-out contexts at the analysis checkpoints. The dashed lines
# are the corpus's unigram entropy and bigram conditional entropy: stage LM1 ends when the loss
# approaches the bigram level (paper: ~0.3 nats above it).

# %%
val = load_contexts(cfg.corpus, "validation", cfg.model.n_ctx).long()[:64]
steps = run.checkpoint_steps[run.checkpoint_steps % cfg.analysis_every == 0]
val_loss = []
for step in tqdm(steps, desc="validation loss"):
    with torch.no_grad():
        val_loss.append(lm_loss(run.load_model(step), (val,)).item())

fig, ax = plt.subplots(figsize=(6, 3.2))
t = np.arange(1, len(run.train_loss) + 1)
ax.plot(t, run.smoothed_loss(), lw=1, label="training loss (smoothed)")
ax.plot(np.maximum(steps, 1), val_loss, "o-", ms=2.5, lw=1, label="validation loss")
ax.axhline(H.unigram, ls="--", color="grey", lw=0.8, label="unigram entropy")
ax.axhline(H.bigram, ls=":", color="k", lw=0.8, label="bigram entropy")
ax.set(xscale="log", xlabel="training step", ylabel="loss (nats/token)", title=f"2-layer attention-only LM, {cfg.name} profile")
ax.legend()
save_figure(fig, "figB2_lm_loss", profile=cfg.name)
plt.show()

# %% [markdown]
# ## Loss by position in the context at the last checkpoint
# In-context learning shows as loss falling with position (the ICL score of App. B.3.3 is the loss
# at token 500 minus the loss at token 50; our `cpu` context is shorter).

# %%
final = per_position_loss(run.load_model(run.checkpoint_steps[-1]), val)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.arange(1, len(final) + 1), final.numpy(), lw=1)
ax.set(xscale="log", xlabel="position k", ylabel="validation loss at k (nats)", title="Loss by context position, final checkpoint")
save_figure(fig, "figB3_lm_loss_by_position", profile=cfg.name)
plt.show()
