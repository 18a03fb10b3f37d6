"""Profiles for the language-model setting (notebook 01 and the refined-LLC notebook; SPEC.md §4).

The paper (App. D.1): attention-only transformers, L = 2 (and L = 1), d_model 256, 8 heads,
context 1024, 5k vocabulary; AdamW lr 0.001, weight decay 0.05, betas (0.9, 0.999), batch 100,
50k steps, no learning-rate schedule, seed 1, a checkpoint every 10 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.data.corpus import CorpusConfig
from stagewise.models.language import LanguageModelConfig
from stagewise.train import TrainConfig

__all__ = ["LanguageProfile", "PROFILES", "PAPER_TRAIN"]

PAPER_TRAIN = TrainConfig(
    num_steps=50_000, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
    schedule="constant", checkpoint_every=10, seed=1, resume_every=1000,
)


@dataclass(frozen=True)
class LanguageProfile:
    """Everything a language-model notebook needs to know about scale.

    ``train.seed`` seeds the model initialisation, ``data_seed`` the order of the contexts
    (:class:`stagewise.data.language.LMBatches`). ``analysis_every`` is the spacing of the
    checkpoints the LLC and probes are computed at (paper: 100 of the 10-step checkpoints).
    """

    name: str
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    train: TrainConfig = PAPER_TRAIN
    batch_size: int = 100
    data_seed: int = 1
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    analysis_every: int = 100

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.analysis_every < 1:
            raise ValueError(f"analysis_every must be >= 1, got {self.analysis_every}")
        if self.model.d_vocab != 5000:
            raise ValueError(f"model.d_vocab must be 5000 to match the truncated GPT-2 tokenizer, got {self.model.d_vocab}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.n_ctx


PROFILES = {
    "paper": LanguageProfile(name="paper"),
    # cpu: chosen by measurement (benchmarks/lm_throughput.py, 2 threads, fp32, this machine under
    # load average ~4 from other jobs): ~2.7k tokens/s at 2,048 tokens per step for context 128
    # or 256, ~0.7k tokens/s at context 1024 (the attention mask and pattern grow as ctx^2).
    # Compute per token is dominated by the 256x5000 unembedding, so ~22 min buys ~4M tokens;
    # context 256 x batch 8 turns them into 2,000 AdamW steps at the paper's lr (1.3-1.8 steps/s,
    # 19-26 min). Enough for LM1 (bigrams) and the start of LM2; the paper's induction heads (LM4)
    # came after ~0.9B tokens, far beyond a CPU. Checkpoints every 25 steps (81 x 12.6 MB).
    "cpu": LanguageProfile(
        name="cpu",
        model=LanguageModelConfig(n_layers=2, n_ctx=256),
        train=TrainConfig(num_steps=2_000, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
                          schedule="constant", checkpoint_every=25, seed=1, resume_every=500),
        batch_size=8,
        analysis_every=50,
    ),
    "smoke": LanguageProfile(
        name="smoke",
        model=LanguageModelConfig(n_layers=2, n_ctx=32, d_model=64, n_heads=4),
        train=TrainConfig(num_steps=20, lr=1e-3, optimizer="adamw", weight_decay=0.05, betas=(0.9, 0.999),
                          schedule="constant", checkpoint_every=5, seed=1, resume_every=10),
        batch_size=4,
        # the ~300 kB committed sample, cut small so every split has documents
        corpus=CorpusConfig(source="sample", max_document_chars=1500, validation_fraction=0.1, sgld_fraction=0.1),
        analysis_every=5,
    ),
}
