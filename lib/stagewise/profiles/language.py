"""Profiles for the language-model setting (notebook 01 and the refined-LLC notebook 04).

The paper (App. D.1): attention-only transformers, L = 2 (and L = 1), d_model 256, 8 heads,
context 1024, 5k vocabulary; AdamW lr 0.001, weight decay 0.05, betas (0.9, 0.999), batch 100,
50k steps, no learning-rate schedule, seed 1, a checkpoint every 10 steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from stagewise.cache import HASH_OMIT_DEFAULT
from stagewise.data.corpus import CorpusConfig, paper_corpus
from stagewise.data.language import ContextCurriculum, RepeatMix
from stagewise.llc import CalibrationSettings, SGLDConfig
from stagewise.models.language import LanguageModelConfig
from stagewise.train import TrainConfig

__all__ = ["LanguageProfile", "PROFILES", "PAPER_TRAIN", "PAPER_SGLD"]

PAPER_TRAIN = TrainConfig(
    num_steps=50_000, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
    schedule="constant", checkpoint_every=10, seed=1, resume_every=1000,
)

# App. D.1.4 / Table 2, two-layer model: 20 chains x 200 steps (one draw per step, no burn-in),
# m = 100, ε = 0.001, γ = 100, β = 1/log m, i.e. nβ = m / log m = 21.71.
PAPER_SGLD = SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=100 / math.log(100), num_chains=20, num_draws=200,
                        num_burnin=0, batch_size=100, seed=0)


SGLD_MODELS = ("fast", "transformer_lens")


@dataclass(frozen=True)
class LanguageProfile:
    """Everything a language-model notebook needs to know about scale.

    ``train.seed`` seeds the model initialisation, ``data_seed`` the order of the contexts
    (:class:`stagewise.data.language.LMBatches`). ``num_analysis_checkpoints`` checkpoints, spread
    evenly in log(step) (:func:`stagewise.train.analysis_steps`), get the LLC and the probes (paper:
    every 100th step, 500 of them). ``sgld`` is the LLC sampler; ``sgld_stride`` > 1 evaluates the
    SGLD loss at every ``stride``-th position only (:func:`~stagewise.models.language.lm_forward_loss_subsampled`,
    our CPU economy; the paper uses every position). ``one_layer_sgld`` / ``one_layer_steps`` / ``one_layer_analysis_checkpoints``
    set the one-layer comparison model of App. B.5 (paper: ε = 0.003, γ = 300, the same training).
    """

    name: str
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    train: TrainConfig = PAPER_TRAIN
    batch_size: int = 100
    data_seed: int = 1
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    num_analysis_checkpoints: int = 500
    sgld: SGLDConfig = PAPER_SGLD
    sgld_stride: int = 1
    # LLC fast path (part of each estimate's cache key): "fast" = the plain-torch twin of the
    # HookedTransformer (stagewise.models.language_fast; same weights and function), and the compute
    # dtype ("auto" = bf16 where the machine runs it faster: stagewise.llc.fast_bf16_support)
    sgld_model: str = "fast"
    sgld_dtype: str = "auto"
    # the model the training loop updates: the HookedTransformer, or its plain-torch twin with the very
    # same initial weights and function ("fast"; checkpoints load into either). Part of the run's key.
    train_model: str = "transformer_lens"
    one_layer_sgld: SGLDConfig = dataclasses.replace(PAPER_SGLD, epsilon=3e-3, gamma=300.0)
    one_layer_steps: int = 50_000
    one_layer_analysis_checkpoints: int = 500
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)  # Fig. B.1a; the first is the main run (train.seed, data_seed)
    # Analogue data (`long` only): a share of the training contexts rewritten with repeated
    # segments, and a context-length curriculum. Both default to the paper's plain text; the SGLD
    # data of the LLC get the same repeat_mix (the training distribution after the curriculum).
    repeat_mix: RepeatMix = field(default_factory=RepeatMix)
    curriculum: ContextCurriculum | None = None
    # SGLD calibration (App. D.3.3; notebook 01's section, stagewise.llc.calibration): ε at 0.3x-3x
    # and nβ at 1x and 3x the profile's (3x: 65), short
    # chains of 40 draws at 3 representative checkpoints, one chain 5x the profile's draws at its
    # setting (issue 35: at `cpu` 2 x 80 draws were ≈ 9% below a 1,000-draw chain's value, which
    # settled after ≈ 500). Cost at `cpu` (131 ms per chain-step): 6 x 3 x 40 steps ≈ 1.6 min, the
    # long chains 3 x 400 steps ≈ 2.6 min. Not part of any cache key.
    sgld_calibration: CalibrationSettings = CalibrationSettings(epsilon_factors=(0.3, 1.0, 3.0), nbeta_factors=(1.0, 3.0),
                                                                num_draws=40, long_factor=5, num_checkpoints=3)

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.num_analysis_checkpoints, int) or self.num_analysis_checkpoints < 2:
            raise ValueError(f"num_analysis_checkpoints must be an integer >= 2, got {self.num_analysis_checkpoints!r}")
        if not isinstance(self.sgld_stride, int) or not 1 <= self.sgld_stride < self.model.n_ctx:
            raise ValueError(f"sgld_stride must be an integer in [1, n_ctx - 1 = {self.model.n_ctx - 1}], got {self.sgld_stride!r}")
        if not self.seeds or self.seeds[0] != self.train.seed or self.seeds[0] != self.data_seed:
            raise ValueError(f"seeds must start with the main run's seed (train.seed = {self.train.seed}, "
                             f"data_seed = {self.data_seed}), got {self.seeds!r}")
        if not isinstance(self.one_layer_analysis_checkpoints, int) or self.one_layer_analysis_checkpoints < 2:
            raise ValueError("one_layer_analysis_checkpoints must be an integer >= 2, "
                             f"got {self.one_layer_analysis_checkpoints!r}")
        if not isinstance(self.one_layer_steps, int) or not 1 <= self.one_layer_steps <= self.train.num_steps:
            raise ValueError(f"one_layer_steps must be an integer in [1, train.num_steps = {self.train.num_steps}], "
                             f"got {self.one_layer_steps!r}")
        if self.train_model not in SGLD_MODELS:
            raise ValueError(f"train_model must be one of {', '.join(SGLD_MODELS)}, got {self.train_model!r}")
        if self.sgld_model not in SGLD_MODELS:
            raise ValueError(f"sgld_model must be one of {', '.join(SGLD_MODELS)}, got {self.sgld_model!r}")
        from stagewise.llc.sampler import COMPUTE_DTYPE_SETTINGS

        if self.sgld_dtype not in COMPUTE_DTYPE_SETTINGS:
            raise ValueError(f"sgld_dtype must be one of {', '.join(COMPUTE_DTYPE_SETTINGS)}, got {self.sgld_dtype!r}")
        if self.curriculum is not None and not (self.curriculum.n_ctx < self.model.n_ctx
                                                and self.curriculum.steps < self.train.num_steps):
            raise ValueError(f"curriculum must be shorter than the run: n_ctx {self.curriculum.n_ctx} < "
                             f"{self.model.n_ctx} and steps {self.curriculum.steps} < {self.train.num_steps}")
        if self.model.d_vocab != 5000:
            raise ValueError(f"model.d_vocab must be 5000 to match the truncated GPT-2 tokenizer, got {self.model.d_vocab}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.n_ctx

    @property
    def analogue(self) -> str:
        """The non-paper ingredients of this profile's data in words ("" for the paper's plain text):
        every figure title, table and JSON of an analogue setting names them."""
        return describe_analogue(self.repeat_mix, self.curriculum)

    def data_record(self) -> dict:
        """``{"data": words, "recipe": the analogue's settings or None}`` for a notebook's headline JSON."""
        if not self.analogue:
            return {"data": "plain text (the paper's kind of data)", "recipe": None}
        return {"data": self.analogue, "recipe": {
            "repeat_mix": dataclasses.asdict(self.repeat_mix),
            "curriculum": None if self.curriculum is None else dataclasses.asdict(self.curriculum)}}

    def with_seed(self, seed: int) -> "LanguageProfile":
        """The same profile with training seed ``seed`` for both the initialisation and the batch
        order (App. B.1: seeds differ "in model initialization and batch schedule")."""
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed), data_seed=seed, seeds=(seed,))

    def one_layer(self) -> "LanguageProfile":
        """The same profile for the one-layer model (App. B.5): L = 1, its own SGLD settings and
        ``one_layer_steps`` training steps (its checkpoint schedule follows from that run length)."""
        train = dataclasses.replace(self.train, num_steps=self.one_layer_steps)
        return dataclasses.replace(self, model=dataclasses.replace(self.model, n_layers=1), train=train,
                                   sgld=self.one_layer_sgld,
                                   num_analysis_checkpoints=self.one_layer_analysis_checkpoints)


def describe_analogue(mix: RepeatMix, curriculum: ContextCurriculum | None) -> str:
    """Words for a language run's non-paper data ("" when there is none)."""
    parts = []
    if mix.fraction:
        what = {"natural": "of their own passages", "random": "random-token segments",
                "unigram": "unigram-token segments"}[mix.source]
        where = "at random offsets" if mix.layout in ("segments", "scatter") else "as BOS + S + S"
        copies = f" x{mix.copies}" if mix.layout == "scatter" else " x2"
        parts.append(f"{mix.fraction:.0%} of contexts repeat {mix.segments} {what} ({mix.min_length}-{mix.max_length} "
                     f"tokens){copies} {where}")
    if curriculum is not None:
        c = curriculum.repeat_mix
        parts.append(f"the first {curriculum.steps:,} steps at context {curriculum.n_ctx}"
                     + (f" ({c.fraction:.0%} repeating {c.segments} passage(s) x{c.copies})" if c.fraction else ""))
    return "analogue data: " + "; ".join(parts) if parts else ""


PROFILES = {
    # LLC in fp32, the paper's numerics (sgld_dtype="auto" would take bf16 on a recent GPU)
    "paper": LanguageProfile(name="paper", sgld_dtype="float32",
                             # one epoch of >= 5.12B tokens as in the paper; $STAGEWISE_PAPER_CORPUS names the
                             # corpus (local shards or 'hub'); without it notebook 01 stops at once
                             corpus=paper_corpus(PAPER_TRAIN.num_steps * 100 * 1024)),
    # cpu: chosen by measurement on this 2-core machine (docs/profiles.md): the paper's architecture at context
    # 256 and batch 8 (2,048 tokens per step) trains at ~7k tokens/s on 2 threads of the first
    # machine (3.2-4.3k on one thread of the later AMD EPYCs), dominated by the 256 x 5000
    # unembedding, so 4,000 AdamW steps at the paper's lr (8.2M tokens) take ~20 min there (32-42 min
    # on one thread inside `make figures`). Pilot runs
    # to 6,000 steps (12M tokens): the validation loss reaches the bigram entropy by ~2k steps (LM1)
    # and keeps falling (n-grams, LM2), a layer-1 head slowly turns to the previous token, but no
    # layer-0 previous-token head and no induction head form (prefix-matching stays at chance);
    # lr 3e-3 was no faster. The paper's LM3-LM4 came after ~0.65-0.9B tokens: a GPU's job.
    # Checkpoints: 60 linear + 60 log-spaced steps (the regression schedule's union), 30 analysed.
    # Trained as the plain-torch twin with torch's fused AdamW (same weights, function and update;
    # other rounding): 1.3-1.5x the HookedTransformer's tokens/s on one CPU thread
    # (benchmarks/results/lm_induction_pilots.md), the probes load the checkpoints as HookedTransformers.
    "cpu": LanguageProfile(
        name="cpu",
        model=LanguageModelConfig(n_layers=2, n_ctx=256),
        train=TrainConfig(num_steps=4_000, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
                          schedule="constant", num_linear=60, num_log=60, seed=1, resume_every=250,
                          fused_optimizer=True),
        train_model="fast",
        batch_size=8,
        num_analysis_checkpoints=30,
        # the paper's ε, γ and nβ = 21.7 (its m = 100) with 2 chains x (40 burn-in + 80 draws) of 4
        # contexts, the loss at every 4th position (measured: 131 ms per chain-step against 197 ms for
        # every position). The burn-in by calibration (benchmarks/results/sgld_calibration/lm_cpu.md):
        # a 400-draw chain climbs only during its first ~40 draws (their mean 79-83% of the settled
        # value, every later 40-draw block 95-103%), so 80 draws with no burn-in read 89-90% of the
        # settled value and were flagged unconverged; with the 40-step burn-in they read 99.1-99.7%,
        # none flagged (notebook 01 at `cpu`: 0 of 30 unconverged). +50% cost: the 30-checkpoint sweep
        # took 1,345 s on one Zen 3 core in fp32 (187 ms per chain-step there).
        sgld=SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=100 / math.log(100), num_chains=2, num_draws=80,
                        num_burnin=40, batch_size=4, seed=0),
        sgld_stride=4,
        # the one-layer model's (the paper's ε = 0.003, γ = 300): no burn-in needed, by calibration
        # (benchmarks/results/sgld_calibration/lm1_cpu.md): 98.7-99.3% of a 400-draw chain's settled
        # value at 102 / 299 / 1,000 steps, none flagged; with the larger ε the first 40 draws are already
        # within 5% of it
        one_layer_sgld=SGLDConfig(epsilon=3e-3, gamma=300.0, nbeta=100 / math.log(100), num_chains=2, num_draws=80,
                                  num_burnin=0, batch_size=4, seed=0),
        one_layer_steps=1_000,
        one_layer_analysis_checkpoints=20,
        seeds=(1,),
    ),
    "smoke": LanguageProfile(
        name="smoke",
        model=LanguageModelConfig(n_layers=2, n_ctx=32, d_model=64, n_heads=4),
        train=TrainConfig(num_steps=24, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
                          schedule="constant", num_linear=8, num_log=8, seed=1, resume_every=10),
        batch_size=4,
        # the ~300 kB committed sample, cut small so every split has documents
        corpus=CorpusConfig(source="sample", max_document_chars=1500, validation_fraction=0.1, sgld_fraction=0.1),
        num_analysis_checkpoints=10,
        sgld=SGLDConfig(epsilon=1e-3, gamma=100.0, nbeta=100 / math.log(100), num_chains=1, num_draws=4,
                        num_burnin=0, batch_size=4, seed=0),
        sgld_stride=4,
        one_layer_sgld=SGLDConfig(epsilon=3e-3, gamma=300.0, nbeta=100 / math.log(100), num_chains=1, num_draws=4,
                                  num_burnin=0, batch_size=4, seed=0),
        one_layer_steps=10,
        one_layer_analysis_checkpoints=10,
        seeds=(1,),
        # the calibration's code path in seconds: 2 cells x 2 checkpoints, a 2x chain
        sgld_calibration=CalibrationSettings(epsilon_factors=(1.0, 3.0), nbeta_factors=(1.0,), num_draws=4,
                                             long_factor=2, num_checkpoints=2),
    ),
}

# long: LM3-LM4 on a CPU through an analogue of the paper's data (issue #30), chosen by the
# induction-head pilots (docs/results/pilots.md): natural text in which half of the contexts repeat
# two passages of their own text four times each at random offsets, and a context-length curriculum
# (the first 3,000 steps on 32-token contexts whose passages repeat three times). Pilot s12_p6 (one
# thread, fused AdamW) formed a layer-0 previous-token head, a layer-1 prefix-matching head and a
# 2-nat loss drop on repeats at random offsets at 7.0M tokens (step ~6,900); plain natural text
# formed none in 44M. The model is the paper's at context 128 (the prefix-matching probe's length),
# batch 8, the paper's optimiser; 16k steps (16.4M tokens) to see the stages after formation; LLC
# and probes at 60 checkpoints.
_LONG_MIX = RepeatMix(fraction=0.5, source="natural", seed=1, layout="scatter", segments=2, copies=4, min_length=8,
                      max_length=12)
PROFILES["long"] = dataclasses.replace(
    PROFILES["cpu"], name="long",
    model=LanguageModelConfig(n_layers=2, n_ctx=128),
    train=dataclasses.replace(PROFILES["cpu"].train, num_steps=16_000),
    # 60 analysed checkpoints (cpu: 30): the circuit forms within a factor ~2 in steps (5-10k), and
    # the probes and LLC should see it at several of them (~22 s per checkpoint here)
    num_analysis_checkpoints=60,
    repeat_mix=_LONG_MIX,
    curriculum=ContextCurriculum(steps=3_000, n_ctx=32,
                                 repeat_mix=RepeatMix(fraction=1.0, source="natural", seed=1, layout="scatter",
                                                      segments=1, copies=3, min_length=4, max_length=8)),
    one_layer_steps=4_000,
)
