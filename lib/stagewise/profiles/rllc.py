"""Profiles for the refined-LLC notebook (04; [W])."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stagewise.data.domains import DomainConfig
from stagewise.llc import CalibrationSettings, SGLDConfig
from stagewise.profiles.language import PROFILES as LANGUAGE_PROFILES

__all__ = ["RefinedLLCProfile", "PROFILES"]


@dataclass(frozen=True)
class RefinedLLCProfile:
    """Per-head weight-refined LLC settings. ``language`` names the language profile whose trained
    model (notebook 01's cache) is analysed; ``num_checkpoints`` how many of its checkpoints.

    Data-refined LLCs and ablations (refined paper §4.2, App. B, C.1, E, F.5):
    ``heads``: the heads of the per-head sweeps (empty = all). ``domains``: the other data sets q'
    (:class:`stagewise.data.domains.DomainConfig`) of the drLLCs, named by ``domain_names``.
    ``data_refined_nbeta``: nβ of the drLLC runs (paper: 30 instead of 23, App. F.2).
    ``ablation_contexts``: contexts of the reference set for mean ablation and of the tokens-in-context
    search (paper: 100k samples); ``tokens_in_context``: how many most-affected tokens in context per
    head (paper: 1k). ``induction_heads``: the heads of the per-head ICL score (Fig. 10; the paper's
    1:6 and 1:7 — another run's come from the head classification). ``cluster_counts``: c of App. F.5.
    ``head_domains``: the domains whose per-head wdrLLC is computed (None: all; the whole-model drLLC
    always uses every domain).
    """

    name: str
    language: str
    sgld: SGLDConfig = field(default_factory=lambda: SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0,
                                                                num_chains=4, num_draws=200, num_burnin=0,
                                                                batch_size=100, seed=0))
    num_checkpoints: int = 50
    heads: tuple[str, ...] = ()
    domains: tuple[DomainConfig, ...] = (DomainConfig("code"), DomainConfig("german"))
    domain_names: tuple[str, ...] = ("code", "german")
    data_refined_nbeta: float = 30.0
    ablation_contexts: int = 100_000
    tokens_in_context: int = 1000
    induction_heads: tuple[str, ...] = ("1:6", "1:7")
    cluster_counts: tuple[int, ...] = (2, 3, 4)
    head_domains: tuple[str, ...] | None = None  # domains of the per-head wdrLLCs (None: all)
    # SGLD calibration (App. D.3.3; notebook 04's section): for one head (the first induction head,
    # else layer 1's largest final wrLLC), its wrLLC on the training data and its wdrLLC on the first
    # head domain (nβ = data_refined_nbeta): ε at 0.3x-3x, γ at 1x and 3x the profile's (escapes:
    # 68-76% of the `long` code estimates were flagged escape, issue 35), short chains of 40 draws
    # at 3 checkpoints (early, the head's peak, late), one chain 5x the profile's draws. Cost at
    # `cpu` (≈ 0.08 s per chain-step, measured on the 31-min sweep): 2 x (6 x 3 x 60 + 3 x 220)
    # steps ≈ 4.6 min. Not part of any cache key.
    sgld_calibration: CalibrationSettings = CalibrationSettings(epsilon_factors=(0.3, 1.0, 3.0), nbeta_factors=(1.0,),
                                                                gamma_factors=(1.0, 3.0), num_draws=40, long_factor=5,
                                                                num_checkpoints=3)

    def __post_init__(self):
        if self.num_checkpoints < 1:
            raise ValueError(f"num_checkpoints must be >= 1, got {self.num_checkpoints}")
        if len(self.domains) != len(self.domain_names) or len(set(self.domain_names)) != len(self.domain_names):
            raise ValueError(f"domain_names must name each of the {len(self.domains)} domains once, "
                             f"got {self.domain_names}")
        if "train" in self.domain_names:
            raise ValueError("domain_names must not use 'train' (the name of the training distribution)")
        if not self.data_refined_nbeta > 0:
            raise ValueError(f"data_refined_nbeta must be > 0, got {self.data_refined_nbeta}")
        for name in ("ablation_contexts", "tokens_in_context"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.head_domains is not None and not set(self.head_domains) <= set(self.domain_names):
            raise ValueError(f"head_domains {self.head_domains} must be among domain_names {self.domain_names}")
        if not self.cluster_counts or any(c < 2 for c in self.cluster_counts):
            raise ValueError(f"cluster_counts must be integers >= 2, got {self.cluster_counts}")


PROFILES = {
    # Wang et al.: step size 1e-3, γ = 200, 4 chains x 200 draws, nβ ≈ 23.
    "paper": RefinedLLCProfile(name="paper", language="paper"),
    # cpu: sized by measurement (docs/profiles.md): 16 heads x 6 checkpoints x {train, code} x 2 chains
    # x (20 + 40) SGLD steps of 4 contexts, the loss at every 4th position (the language profile's
    # sgld_stride); German only for the whole-model drLLC; 256 reference contexts for mean ablation
    # and tokens in context.
    # Budget chosen by calibration (benchmarks/results/sgld_calibration/rllc_heads_cpu.md: heads 1:3
    # and 0:6 at steps 171 and 4,000 against one chain of 20 + 1,000 draws): 2 x (5 + 40) read
    # 90.2-97.5% of the settled wrLLC — the chain still leaving w* — and notebook 04 flagged 31% of
    # its 192 per-head estimates unconverged; a 20-step burn-in, 2 x (20 + 40), reads 97.2-107.9%,
    # and up to 4x more draws do not narrow that spread. With it, notebook 04 at `cpu` (2,079 s,
    # per-head sweeps 1,866 s on one Zen 3 core): 101% of a 200-draw chain at step 4,000, 22%
    # unconverged, most at steps 1-42 (at step 1 no short chain settles: no minimum there). On code
    # every (eps, gamma) cell escapes at step 4,000, gamma = 600 included: w* is not a minimum of
    # the code loss, so gamma stays [W]'s 200 and negative wdrLLCs are reported. The chains run
    # through HeadChainLM (head_llc_sweep's head_chains): 1.44x less time per estimate than the whole
    # twin, the same λ̂ to 4 decimals (benchmarks/results/head_chains.md). What is left of a layer-1
    # head's estimate (5.6 s, profiled): the unembedding's forwards (1.3 s) and the backward passes
    # (1.5 s, mostly through the unembedding), the prefix once per step (1.3 s).
    "cpu": RefinedLLCProfile(name="cpu", language="cpu",
                             sgld=SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0, num_chains=2, num_draws=40,
                                             num_burnin=20, batch_size=4, seed=0),
                             num_checkpoints=6, ablation_contexts=256, tokens_in_context=200,
                             head_domains=("code",)),
    "smoke": RefinedLLCProfile(name="smoke", language="smoke",
                               sgld=SGLDConfig(epsilon=1e-3, gamma=200.0, nbeta=23.0, num_chains=1, num_draws=5,
                                               num_burnin=0, batch_size=4, seed=0),
                               num_checkpoints=2,
                               # no downloads in CI: a slice of the local standard library and one
                               # source of the committed sample corpus
                               domains=(DomainConfig("code", max_chars=200_000),
                                        DomainConfig("corpus", corpus=LANGUAGE_PROFILES["smoke"].corpus,
                                                     corpus_source="austen", min_document_chars=0)),
                               domain_names=("code", "austen"), ablation_contexts=8, tokens_in_context=20,
                               induction_heads=("1:0", "1:1"), cluster_counts=(2,),
                               sgld_calibration=CalibrationSettings(epsilon_factors=(1.0, 3.0), nbeta_factors=(1.0,),
                                                                    num_draws=5, long_factor=2, num_checkpoints=2)),
}

# long: the cpu settings on the long language profile's checkpoints (the analogue-data run that forms
# induction heads, issue #30), at 10 checkpoints instead of 6 so that the formation (~7k of 16k steps)
# is bracketed by several of them; each SGLD step costs about half the cpu one's (context 128).
# Per-head budget 2 x (100 burn-in + 400 draws), by calibration (notebook 04's section, induction
# head 1:0) and a pilot. With cpu's 2 x (20 + 40) the estimate read 68-92% of a 200-draw chain, which
# was still climbing out of w* (settled after 97-171 draws), and 19% of the 320 estimates were
# unconverged. With 2 x (100 + 100) the climb was gone (chain 0 at its 100th draw 96% / 98% of a
# 500-draw chain's settled value at steps 1 / 4) and 8% were unconverged, but the chains' noise
# remained (two chains 1.43 and 1.01 at step 1, 2.98 and 2.59 at step 4; the mean 82-112% of the
# settled value, NOT adequate at ±5%), and layer 1's clusters were not reproduced chain by chain.
# Pilot (benchmarks/pilots/rllc_head_budget_long.py; 4 chains of heads 1:0, 1:4, 1:2, 1:6 at steps
# 5,966 and 16,000): 4x the draws narrows the chains' sd from 0.048 to 0.028 for 2.4x the cost,
# 4x the batch only to 0.037 for 2.7x, so the draws are the lever. Cost at 2 x (100 + 100): notebook
# 04 in 42.8 min on two Zen 3 cores (the notebook and its helper, `stagewise-figures --jobs 2`).
# With 2 x (100 + 400), notebook 04 at long (2-core Intel Xeon, SGLD in bf16): 101.7-103.9% of a
# 2,000-draw chain's settled wrLLC at steps 1, 4 and 16,000 (adequate), 0.9% of the 320 per-head
# estimates unconverged, layer 1's clusters reproduced chain by chain (ARI 1.0, 1.0; was 1.0, 0.16);
# 93 min of wall clock, one core for its first 40 min (docs/profiles.md has the last run's time).
PROFILES["long"] = replace(PROFILES["cpu"], name="long", language="long", num_checkpoints=10,
                           sgld=replace(PROFILES["cpu"].sgld, num_burnin=100, num_draws=400))
