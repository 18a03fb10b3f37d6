"""Language-model probes (main paper §5, App. B) and the per-checkpoint driver.

The probes live in :mod:`~stagewise.probes.language_ngrams` (bigram and n-gram scores, App.
B.3.1-2), :mod:`~stagewise.probes.language_behaviour` (loss per position with the positional
embedding ablated, ICL score, per-token loss change: App. B.3.3, B.4.1, Fig. 5) and
:mod:`~stagewise.probes.language_structure` (positional-embedding PCA, composition scores,
previous-token / current-token / prefix-matching scores, head classification: App. B.4) and are
re-exported here. This module keeps the corpus reference levels (:func:`ngram_entropies`) and
:func:`per_position_loss`, and adds :func:`lm_probe_checkpoints`, which evaluates all of them at
every checkpoint (one wide row per step, cached per checkpoint)::

    val = load_contexts(profile.corpus, "validation", profile.model.n_ctx).long()
    bigrams = bigram_distribution(load_token_stream(profile.corpus, "train"), profile.model.d_vocab)
    table = lm_probe_checkpoints(run.load_model, steps, val, bigrams, lm_probe_config(profile.name))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from stagewise.probes.language_behaviour import *  # noqa: F403 (re-export)
from stagewise.probes.language_behaviour import __all__ as _behaviour_all
from stagewise.probes.language_behaviour import _check_tokens, _validation_pass, icl_score, icl_tokens, loss_positions
from stagewise.probes.language_ngrams import *  # noqa: F403 (re-export)
from stagewise.probes.language_ngrams import __all__ as _ngrams_all
from stagewise.probes.language_ngrams import (
    BigramDistribution,
    _sample_positions,
    bigram_cross_entropy,
    common_ngrams,
    ngram_scores,
)
from stagewise.probes.language_structure import *  # noqa: F403 (re-export)
from stagewise.probes.language_structure import __all__ as _structure_all
from stagewise.probes.language_structure import (
    composition_scores,
    positional_embedding_pca,
    prefix_matching_scores,
    previous_and_current_token_scores,
)
from stagewise.progress import tqdm

__all__ = [*_behaviour_all, *_ngrams_all, *_structure_all, "NgramEntropies", "ngram_entropies", "per_position_loss",
           "LMProbeConfig", "PROBE_PRESETS", "lm_probe_config", "lm_probe_row", "lm_probe_checkpoints",
           "head_scores_at", "composition_at", "weights_digest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NgramEntropies:
    """Entropies in nats of the empirical unigram distribution and of next token given current."""

    unigram: float
    bigram: float
    num_tokens: int


def ngram_entropies(stream: torch.Tensor, d_vocab: int) -> NgramEntropies:
    """H(t) and H(t_{k+1} | t_k) of a token stream, from counts (plug-in estimates).

    The bigram conditional entropy is the loss of the best model that sees only the current token,
    the level stage LM1 approaches.
    """
    ids = torch.as_tensor(stream).reshape(-1).to(torch.int64).numpy()
    if ids.size < 2:
        raise ValueError(f"stream must hold at least 2 tokens, got {ids.size}")
    if ids.min() < 0 or ids.max() >= d_vocab:
        raise ValueError(f"token ids must lie in [0, d_vocab={d_vocab}), got [{ids.min()}, {ids.max()}]")
    uni = np.bincount(ids, minlength=d_vocab).astype(np.float64)
    p = uni[uni > 0] / uni.sum()
    h_uni = float(-(p * np.log(p)).sum())
    pairs = np.bincount(ids[:-1] * d_vocab + ids[1:])
    nz = np.nonzero(pairs)[0]
    counts = pairs[nz].astype(np.float64)
    prev = np.bincount(ids[:-1], minlength=d_vocab).astype(np.float64)
    cond = counts / prev[nz // d_vocab]
    h_bi = float(-(counts * np.log(cond)).sum() / counts.sum())
    return NgramEntropies(h_uni, h_bi, int(ids.size))


@torch.no_grad()
def per_position_loss(model, tokens: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Mean next-token loss at each position k (predicting token k+1), shape [n_ctx - 1]."""
    from stagewise.models.language import per_token_loss

    tokens = torch.as_tensor(tokens).long()
    total = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    for lo in range(0, len(tokens), batch_size):
        chunk = tokens[lo:lo + batch_size]
        total += per_token_loss(model(chunk, return_type="logits"), chunk).double().sum(0)
    return (total / len(tokens)).float()


# ------------------------------------------------------------------------------------------------
# Per-checkpoint driver


@dataclass(frozen=True)
class LMProbeConfig:
    """Sample counts and settings of the per-checkpoint probes; defaults are the paper's (App. B).

    ``num_validation`` validation sequences (the first ones of the tokens passed) carry the loss
    per position (with / without the positional ablation), the ICL score, ℓ^n_test and the
    ``bigram_samples`` positions of the bigram score. ``loss_positions`` / ``icl_tokens`` default to
    :func:`loss_positions` / :func:`icl_tokens` of the model's context. ``previous_token_sequences``
    of lengths ``previous_token_lengths`` give the previous- and current-token scores,
    ``prefix_sequences`` of ``prefix_length`` the prefix-matching score; ``composition_layer_norm``
    is passed to :func:`composition_scores`.
    """

    num_validation: int = 2000
    bigram_samples: int = 5000
    ngram_sizes: tuple[int, ...] = (2, 3, 4)
    ngram_count: int = 1000
    previous_token_sequences: int = 10_000
    previous_token_lengths: tuple[int, int] = (16, 64)
    prefix_sequences: int = 10_000
    prefix_length: int = 128
    loss_positions: tuple[int, ...] | None = None
    icl_tokens: tuple[int, int] | None = None
    icl_window: int = 0
    pca_components: int = 3
    composition_layer_norm: str = "none"
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        for name in ("num_validation", "bigram_samples", "ngram_count", "previous_token_sequences",
                     "prefix_sequences", "pca_components", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.ngram_sizes or any(not isinstance(n, int) or n < 2 for n in self.ngram_sizes):
            raise ValueError(f"ngram_sizes must be a non-empty tuple of integers >= 2, got {self.ngram_sizes!r}")
        lo, hi = self.previous_token_lengths
        if not 2 <= lo <= hi:
            raise ValueError(f"previous_token_lengths must satisfy 2 <= lo <= hi, got {self.previous_token_lengths!r}")
        if self.prefix_length < 6:
            raise ValueError(f"prefix_length must be >= 6, got {self.prefix_length!r}")
        if self.icl_tokens is not None and not 1 <= self.icl_tokens[0] < self.icl_tokens[1]:
            raise ValueError(f"icl_tokens must be (k1, k2) with 1 <= k1 < k2, got {self.icl_tokens!r}")
        if not isinstance(self.icl_window, int) or self.icl_window < 0:
            raise ValueError(f"icl_window must be an integer >= 0 tokens, got {self.icl_window!r}")
        if self.composition_layer_norm not in ("none", "fold"):
            raise ValueError(f"composition_layer_norm must be 'none' or 'fold', got {self.composition_layer_norm!r}")

    def check_model(self, model) -> None:
        """ValueError naming the setting that does not fit the model's context."""
        n_ctx = int(model.cfg.n_ctx)
        for name, needed in (("previous_token_lengths", self.previous_token_lengths[1]),
                             ("prefix_length", self.prefix_length), ("ngram_sizes", max(self.ngram_sizes) + 1)):
            if needed > n_ctx:
                raise ValueError(f"{name} needs {needed} positions but the model's n_ctx is {n_ctx}")


# Bump when a probe's definition changes: cached rows of older versions are then not reused.
PROBE_VERSION = 2  # 2: icl_score.sem column, icl_window

# Sizes per profile (the lead may move these into stagewise.profiles.language). `cpu` keeps one
# checkpoint's probes at a few seconds on 2 cores (docs/profiles.md); `paper` uses the paper's counts except
# num_validation (the paper averages the ICL score over 100k rows; 2,000 x 1,024 tokens here).
PROBE_PRESETS = {
    "paper": LMProbeConfig(),
    # cpu: 256 validation contexts and a ±5-token ICL window (the single-token score of 32 contexts
    # was noise: +0.9 ± 0.7 nats at the last checkpoint, −0.36 ± 0.17 with 512)
    "cpu": LMProbeConfig(num_validation=256, icl_window=5, bigram_samples=2000, previous_token_sequences=1000,
                         prefix_sequences=300, batch_size=16),
    # long: the cpu sizes (the long profile's contexts are as long or shorter, and checkpoints as many)
    "long": LMProbeConfig(num_validation=256, icl_window=5, bigram_samples=2000, previous_token_sequences=1000,
                          prefix_sequences=300, batch_size=16),
    "smoke": LMProbeConfig(num_validation=4, bigram_samples=50, ngram_sizes=(2, 3), ngram_count=20,
                           previous_token_sequences=32, previous_token_lengths=(8, 32), prefix_sequences=16,
                           prefix_length=32, batch_size=4),
}


def lm_probe_config(profile_name: str, **overrides) -> LMProbeConfig:
    """The probe settings of a profile (``smoke``, ``cpu``, ``long`` or ``paper``), with field overrides."""
    from dataclasses import replace

    if profile_name not in PROBE_PRESETS:
        raise ValueError(f"profile_name must be one of {sorted(PROBE_PRESETS)}, got {profile_name!r}")
    return replace(PROBE_PRESETS[profile_name], **overrides)


def weights_digest(model) -> str:
    """SHA-256 (16 hex digits) of a model's state dict: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _head_columns(prefix: str, scores: torch.Tensor) -> dict[str, float]:
    n_layers, n_heads = scores.shape
    return {f"{prefix}.{l}:{h}": float(scores[l, h]) for l in range(n_layers) for h in range(n_heads)}


@torch.no_grad()
def lm_probe_row(model, validation_tokens, bigrams: BigramDistribution, config: LMProbeConfig | None = None,
                 ngrams: Mapping[int, torch.Tensor] | None = None) -> dict[str, float]:
    """All probes at one checkpoint as one flat ``{column: value}`` row (see :func:`lm_probe_checkpoints`)."""
    config = config or LMProbeConfig()
    config.check_model(model)
    val = _check_tokens(model, validation_tokens, "validation_tokens")
    if len(val) < config.num_validation:
        raise ValueError(f"validation_tokens holds {len(val)} sequences, fewer than num_validation={config.num_validation}")
    val = val[:config.num_validation]
    if bigrams.d_vocab != model.cfg.d_vocab:
        raise ValueError(f"bigrams has d_vocab {bigrams.d_vocab} but the model has {model.cfg.d_vocab}")
    ngrams = ngrams if ngrams is not None else {n: common_ngrams(n, config.ngram_count) for n in config.ngram_sizes}
    n_ctx = val.shape[1]
    positions = loss_positions(n_ctx) if config.loss_positions is None else tuple(config.loss_positions)
    if not positions or min(positions) < 1 or max(positions) > n_ctx - 1:
        raise ValueError(f"loss_positions must lie in [1, {n_ctx - 1}] for contexts of {n_ctx}, got {positions}")
    k1, k2 = config.icl_tokens or icl_tokens(n_ctx)
    row: dict[str, float] = {}

    # behaviour (App. B.3): one pass over the validation batch per condition
    samples = _sample_positions(val, bigrams, config.bigram_samples, config.seed)
    losses, b = _validation_pass(model, val, config.batch_size, samples=samples,
                                 sample_fn=partial(bigram_cross_entropy, bigrams=bigrams))
    ablated, _ = _validation_pass(model, val, config.batch_size, ablate_positional=True)
    row["loss"], row["loss.pos_ablated"] = float(losses.mean()), float(ablated.mean())
    mean_plain, mean_ablated = losses.mean(0), ablated.mean(0)
    for k in positions:
        row[f"loss_at.{k}"] = float(mean_plain[k - 1])
        row[f"loss_at.{k}.pos_ablated"] = float(mean_ablated[k - 1])
    row["icl_score"], row["icl_score.sem"] = icl_score(losses=losses, k1=k1, k2=k2, window=config.icl_window,
                                                       return_sem=True)
    row["bigram.score"] = float(b.mean())
    row["bigram.optimum"] = float(bigrams.entropy[val[samples[:, 0], samples[:, 1]].numpy()].mean())
    for n, r in ngram_scores(model, val, ngrams, test_losses=losses).iterrows():
        row[f"ngram.{n}.loss_gram"], row[f"ngram.{n}.loss_test"], row[f"ngram.{n}.score"] = r.loss_gram, r.loss_test, r.score

    # structure (App. B.4)
    pca = positional_embedding_pca(model, min(config.pca_components, min(model.W_pos.shape)))
    for i, r in enumerate(pca.explained_variance_ratio[:config.pca_components]):
        row[f"pos_pca.evr.{i + 1}"] = float(r)
    row["pos_norm.mean"] = float(pca.norms.mean())
    prev, cur, chance = previous_and_current_token_scores(model, config.previous_token_sequences,
                                                          config.previous_token_lengths, config.seed)
    prefix, dup, chance_prefix = prefix_matching_scores(model, config.prefix_sequences, config.prefix_length,
                                                        config.seed + 1)
    row.update(_head_columns("previous_token", prev))
    row.update(_head_columns("current_token", cur))
    row.update(_head_columns("prefix_matching", prefix))
    row.update(_head_columns("duplicate_token", dup))
    row["previous_token.chance"], row["prefix_matching.chance"] = chance, chance_prefix
    for reader in range(1, model.cfg.n_layers):
        for writer in range(reader):
            for kind in "QKV":
                table = composition_scores(model, kind, writer, reader, config.composition_layer_norm)
                for h1 in range(table.shape[0]):
                    for h2 in range(table.shape[1]):
                        row[f"{kind}_composition.{writer}:{h1}->{reader}:{h2}"] = float(table[h1, h2])
    return row


def _data_digest(val: torch.Tensor, bigrams: BigramDistribution, ngrams) -> str:
    h = hashlib.sha256(val.to(torch.int64).contiguous().numpy().tobytes())
    h.update(bigrams.digest.encode())
    for n in sorted(ngrams):
        h.update(f"{n};".encode() + torch.as_tensor(ngrams[n]).to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def lm_probe_checkpoints(load_model: Callable[[int], torch.nn.Module], steps: Iterable[int], validation_tokens,
                         bigrams: BigramDistribution, config: LMProbeConfig | None = None,
                         ngrams: Mapping[int, torch.Tensor] | None = None, cache: bool = True,
                         progress: bool = True) -> pd.DataFrame:
    """Every probe of App. B at every checkpoint: one row per step, wide columns, first column ``step``.

    ``load_model(step)`` returns the model at that checkpoint (e.g. ``TrainedRun.load_model``),
    ``validation_tokens`` [N, n_ctx] BOS-prefixed validation contexts (the first
    ``config.num_validation`` are used), ``bigrams`` the training stream's q̃ (:func:`bigram_distribution`),
    ``ngrams`` {n: [count, n]} (default: :func:`common_ngrams` for ``config.ngram_sizes``).

    Columns: ``loss``, ``loss.pos_ablated``, ``loss_at.{k}[.pos_ablated]`` (App. B.4.1),
    ``icl_score`` (B.3.3), ``bigram.score`` / ``bigram.optimum`` (eqs. 11-12), ``ngram.{n}.score``
    / ``.loss_gram`` / ``.loss_test`` (B.3.2), ``pos_pca.evr.{i}``, ``pos_norm.mean`` (B.4.1),
    ``previous_token.{l:h}``, ``current_token.{l:h}``, ``prefix_matching.{l:h}``,
    ``duplicate_token.{l:h}`` (B.4.3-4) with their uniform-attention levels ``*.chance``, and
    ``{Q,K,V}_composition.{l1:h1}->{l2:h2}`` (B.4.2).

    With ``cache`` each checkpoint's row is stored under ``<cache>/lm-probes/<hash>/row.pt``, keyed
    by the settings, a digest of the weights and a digest of the data, so a re-run only loads models
    and hashes their weights.
    """
    from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact

    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("steps must hold at least one checkpoint step")
    config = config or LMProbeConfig()
    val = torch.as_tensor(validation_tokens).long()
    if val.dim() != 2 or len(val) < config.num_validation:
        raise ValueError(f"validation_tokens must be [N >= num_validation={config.num_validation}, n_ctx], "
                         f"got {tuple(val.shape)}")
    val = val[:config.num_validation]
    ngrams = ngrams if ngrams is not None else {n: common_ngrams(n, config.ngram_count) for n in config.ngram_sizes}
    data = _data_digest(val, bigrams, ngrams)
    rows, hits = [], 0
    for step in tqdm(steps, desc="LM probes", disable=not progress):
        model = load_model(step)
        path = None
        if cache:
            key = {"probe": "lm-probes", "version": PROBE_VERSION, "config": config_to_dict(config),
                   "weights": weights_digest(model), "data": data}
            path = artifact_dir("lm-probes", key) / "row.pt"
        if path is not None and path.exists():
            row = load_artifact(path)
            hits += 1
        else:
            row = lm_probe_row(model, val, bigrams, config, ngrams)
            if path is not None:
                atomic_save(row, path)
        rows.append({"step": step, **row})
    log.info("LM probes at %d checkpoints (%d from the cache)", len(steps), hits)
    return pd.DataFrame(rows)


def _row_at(table: pd.DataFrame, step: int) -> pd.Series:
    match = table[table["step"] == step]
    if match.empty:
        raise ValueError(f"step {step} is not in the table (steps {table['step'].min()}-{table['step'].max()})")
    return match.iloc[0]


def head_scores_at(table: pd.DataFrame, step: int) -> pd.DataFrame:
    """The per-head score table of :func:`attention_head_scores` from one row of
    :func:`lm_probe_checkpoints` (for :func:`classify_heads`)."""
    row = _row_at(table, step)
    labels = [c.split(".", 1)[1] for c in table.columns if c.startswith("previous_token.") and ":" in c]
    out = pd.DataFrame({
        "layer": [int(l.split(":")[0]) for l in labels], "head": [int(l.split(":")[1]) for l in labels],
        **{col: [float(row[f"{col}.{l}"]) for l in labels]
           for col in ("previous_token", "current_token", "prefix_matching", "duplicate_token")},
    }, index=labels)
    out.attrs["chance"] = {"previous_token": float(row["previous_token.chance"]),
                           "current_token": float(row["previous_token.chance"]),
                           "prefix_matching": float(row["prefix_matching.chance"]),
                           "duplicate_token": float(row["prefix_matching.chance"])}
    return out


def composition_at(table: pd.DataFrame, step: int, kind: str = "K", writer_layer: int = 0,
                   reader_layer: int = 1) -> pd.DataFrame:
    """The [writer head x reader head] composition table of ``kind`` at ``step`` (Fig. B.5)."""
    if kind not in ("Q", "K", "V"):
        raise ValueError(f"kind must be 'Q', 'K' or 'V', got {kind!r}")
    row = _row_at(table, step)
    prefix = f"{kind}_composition.{writer_layer}:"
    cols = [c for c in table.columns if c.startswith(prefix) and c.split("->")[1].startswith(f"{reader_layer}:")]
    if not cols:
        raise ValueError(f"no {kind}-composition columns from layer {writer_layer} to layer {reader_layer}")
    pairs = [c.split(".", 1)[1].split("->") for c in cols]
    out = pd.DataFrame({"writer": [p[0] for p in pairs], "reader": [p[1] for p in pairs],
                        "score": [float(row[c]) for c in cols]})
    return out.pivot(index="writer", columns="reader", values="score")
