"""What a profile will do, notebook by notebook, before anything is trained (issue #18).

``stagewise-figures --profile paper --plan`` prints this. Three parts, each usable alone:

* **Work** (:func:`plan_profile`): per notebook, the steps it will run, read from the profiles and
  the notebooks' defaults — training steps, tokens and checkpoints, SGLD chains × steps × batch at
  how many checkpoints, probe and Hessian passes — as :class:`WorkItem` rows of one *kind*:
  ``train`` (optimizer steps), ``sgld`` (chain-steps: one chain's forward + backward, plus its share
  of the ℓ(w*) pass), ``forward`` (no-grad passes), ``hvp`` (Hessian-vector products), ``toy``
  (chain-steps on a 2-3-dimensional potential) and ``tokenize`` (corpus tokens).
* **Memory** (:func:`trace_step`): one step of each kind run on PyTorch's ``meta`` device at the
  profile's full shapes — no memory is allocated, every tensor the step creates is seen — giving
  the step's high-water mark of live tensor bytes, its matmul FLOPs (``FlopCounterMode``) and the
  bytes its operations write. On CPU the high-water mark is within ~10% of the measured growth of
  the process's peak RSS (``tests/test_plan.py``). SGLD is traced both ways the sampler runs it:
  chains one after another (``loop``, the CPU default) and vmapped (``vmap``, the CUDA default).
* **Time** (:func:`calibrate`, :func:`gpu_model`): seconds per step measured on this machine by a
  few real steps at each shape (training steps, forward passes, SGLD through
  :func:`stagewise.llc.estimate_llc_module`), the batch cut to fit a memory and FLOP budget and the
  time scaled linearly in the batch; and a *projection* to a named GPU class from the traced FLOPs
  and bytes at an assumed utilisation of its peak, floored by the per-step time measured on an
  H100 for the regression transformer (``benchmarks/results/llc_benchmark_cuda.json``). Every
  number says whether it was measured, scaled or modelled. ``benchmarks/gpu_check.py`` measures the
  same steps on a real GPU and feeds them into the same projection.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import platform
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "NOTEBOOKS",
    "DEPENDENCIES",
    "WIDE",
    "KINDS",
    "StepSpec",
    "WorkItem",
    "NotebookPlan",
    "ProfilePlan",
    "plan_profile",
    "StepTrace",
    "trace_step",
    "StepTime",
    "Calibration",
    "calibrate",
    "DeviceClass",
    "GPU_CLASSES",
    "gpu_model",
    "item_seconds",
    "item_memory",
    "measure_step",
    "notebook_seconds",
    "format_plan",
    "plan_report",
]

log = logging.getLogger(__name__)

NOTEBOOKS = {"01": "01_lm_stages", "02": "02_regression_stages", "03": "03_transient_ridge",
             "04": "04_rllc_heads", "05": "05_hessian_comparison"}
# Notebook -> the notebook whose cached artifacts it reads (04 analyses 01's language run, 05 02's
# regression run and LLC sweep). Run alone, the dependent notebook computes them itself.
DEPENDENCIES = {"04_rllc_heads": "01_lm_stages", "05_hessian_comparison": "02_regression_stages"}
# Notebooks whose work is independent runs spread over one worker process per core (03's 13 training
# runs): `stagewise-figures --jobs N` runs them first, alone, on all cores, then the other chains side
# by side, so no core idles at the end behind the longest chain.
WIDE = frozenset({"03_transient_ridge"})
KINDS = ("train", "sgld", "forward", "hvp", "toy", "tokenize")
FAMILIES = ("lm", "regression")
HVPS_PER_LANCZOS = 50  # assumed Lanczos iterations for the top eigenvalue (tol 1e-3); not measured
REGRESSION_PROBE_PASSES = 12  # forward passes of the App. C probes per checkpoint (≈: 6 OOD + 6 others)
BYTES = 4  # float32


# ---------------------------------------------------------------------------------------- work


@dataclass(frozen=True)
class StepSpec:
    """One kind of step on one model shape (what is traced and timed).

    ``family``: ``"lm"`` (:class:`~stagewise.models.language.LanguageModelConfig`) or
    ``"regression"`` (:class:`~stagewise.models.regression.RegressionTransformerConfig`).
    ``stride``: the LM SGLD loss at every ``stride``-th position. ``optimizer``: of ``train`` steps.
    ``chains``: SGLD chains (the vmapped step's memory; each chain-step's share of the ℓ(w*) pass).
    ``variant``: the SGLD loss path the sweeps run — LM: ``"fast"`` (the plain-torch twin,
    :mod:`stagewise.models.language_fast`) or ``"transformer_lens"``; regression:
    ``"predictions_only"`` or ``"full"``. ``dtype``: the SGLD compute-dtype setting ('float32',
    'bfloat16' or 'auto', resolved per device as the sweeps do). Training, probes and Hessians run
    the TransformerLens model / full regression loss in float32.
    """

    family: str
    model: Any
    kind: str
    stride: int = 1
    optimizer: str = "adam"
    chains: int = 1
    variant: str = ""
    dtype: str = "float32"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.kind not in ("train", "sgld", "forward", "hvp"):
            raise ValueError(f"kind of a model step must be train, sgld, forward or hvp, got {self.kind!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {self.stride!r}")
        if not isinstance(self.chains, int) or self.chains < 1:
            raise ValueError(f"chains must be an integer >= 1, got {self.chains!r}")

    @property
    def shape_label(self) -> str:
        m = self.model
        if self.family == "lm":
            return f"LM L={m.n_layers} ctx={m.n_ctx}"
        return f"regression D={m.task_size} K={m.max_examples} d={m.d_embed} mlp={m.d_mlp}"

    @property
    def timing_key(self) -> tuple:
        """Steps with equal keys cost the same per row (the chain count only splits the ℓ(w*) pass)."""
        sgld = self.kind == "sgld"
        return (self.family, self.model, self.kind, self.stride if sgld else 1,
                self.optimizer if self.kind == "train" else "", self.variant if sgld else "", self.dtype if sgld else "")

    def label(self) -> str:
        extra = ""
        if self.kind == "sgld":
            extra = f" [{self.variant or 'default'}, {self.dtype}]"
            extra += f", loss every {self.stride}th position" if self.stride > 1 else ""
        return f"{self.kind} {self.shape_label}{extra}"


@dataclass(frozen=True)
class WorkItem:
    """One line of a notebook's plan: ``count`` steps of one kind, ``batch`` rows each.

    ``count`` is optimizer steps (train), chain-steps (sgld, toy), passes (forward), HVPs (hvp) or
    tokens (tokenize). ``tokens``: training tokens; ``checkpoints``: written (train) or analysed
    (the rest); ``disk_bytes``: checkpoint files; ``host_bytes``: data held in host memory;
    ``conditional``: when the item runs only if a cache is missing.
    """

    notebook: str
    what: str
    kind: str
    count: int
    batch: int = 1
    spec: StepSpec | None = None
    tokens: int = 0
    checkpoints: int = 0
    disk_bytes: int = 0
    host_bytes: int = 0
    detail: str = ""
    conditional: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("train", "sgld", "forward", "hvp") and self.spec is None:
            raise ValueError(f"a {self.kind} item needs a StepSpec")
        if not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"count must be an integer >= 0, got {self.count!r}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")


@dataclass(frozen=True)
class NotebookPlan:
    notebook: str
    profile: str
    items: tuple[WorkItem, ...]
    notes: tuple[str, ...] = ()
    depends_on: str | None = None

    @property
    def disk_bytes(self) -> int:
        return sum(i.disk_bytes for i in self.items if not i.conditional)

    @property
    def host_bytes(self) -> int:
        return max((i.host_bytes for i in self.items), default=0)


@dataclass(frozen=True)
class ProfilePlan:
    profile: str
    notebooks: tuple[NotebookPlan, ...]

    @property
    def items(self) -> list[WorkItem]:
        return [i for nb in self.notebooks for i in nb.items]

    def specs(self) -> dict[tuple, tuple[StepSpec, int]]:
        """Each distinct step (timing key) with the largest batch any item runs it at."""
        out: dict[tuple, tuple[StepSpec, int]] = {}
        for item in self.items:
            if item.spec is None:
                continue
            key = item.spec.timing_key
            if key not in out or item.batch > out[key][1]:
                out[key] = (item.spec, item.batch)
        return out


def _param_count(family: str, model) -> int:
    if family == "lm":  # TransformerLens attention-only, LN before attention and unembedding, Shortformer
        d, L, H, dh, V, T = model.d_model, model.n_layers, model.n_heads, model.d_head, model.d_vocab, model.n_ctx
        per_layer = 4 * H * dh * d + 3 * H * dh + d + 2 * d  # W_Q/K/V/O, b_Q/K/V, b_O, ln gamma/beta
        return V * d + T * d + L * per_layer + 2 * d + d * V + V
    from stagewise.models.regression import RegressionTransformer, count_parameters

    return count_parameters(RegressionTransformer(model))


def _ckpt_disk(num: int, params: int) -> int:
    return num * params * BYTES


def _sgld_set_bytes(model, num: int) -> int:
    """The regression SGLD data set in host memory: tokens [num, 2K, D+1] and ys [num, K], float32."""
    return num * (model.n_ctx * model.token_size + model.max_examples) * BYTES


def _lm_items(nb: str, p, what: str, probe_cfg, probes: bool) -> list[WorkItem]:
    """Training, LLC and (optionally) probes of one language run."""
    ckpts = len(p.train.checkpoint_steps())
    analysed = min(p.num_analysis_checkpoints, ckpts)
    params = _param_count("lm", p.model)
    tokens = p.train.num_steps * p.tokens_per_step
    s = p.sgld
    items = [
        WorkItem(nb, f"train {what}", "train", p.train.num_steps, p.batch_size,
                 StepSpec("lm", p.model, "train", optimizer=p.train.optimizer), tokens=tokens, checkpoints=ckpts,
                 disk_bytes=_ckpt_disk(ckpts, params),
                 detail=f"{p.train.num_steps:,} steps × {p.batch_size} × {p.model.n_ctx} = {tokens / 1e9:.3g}B tokens; "
                        f"{ckpts:,} checkpoints × {params * BYTES / 1e6:.1f} MB"),
        WorkItem(nb, f"LLC {what}", "sgld", analysed * s.num_chains * s.num_steps, s.batch_size,
                 StepSpec("lm", p.model, "sgld", stride=p.sgld_stride, chains=s.num_chains, variant=p.sgld_model,
                          dtype=p.sgld_dtype), checkpoints=analysed,
                 detail=f"{analysed} checkpoints × {s.num_chains} chains × ({s.num_burnin} + {s.num_draws}) steps × "
                        f"batch {s.batch_size}" + (f", loss every {p.sgld_stride}th position" if p.sgld_stride > 1 else "")),
    ]
    if probes:
        ctx = p.model.n_ctx
        prev_tokens = probe_cfg.previous_token_sequences * sum(probe_cfg.previous_token_lengths)
        fwd_tokens = (2 * probe_cfg.num_validation * ctx + prev_tokens + probe_cfg.prefix_sequences * probe_cfg.prefix_length
                      + probe_cfg.ngram_count * sum(probe_cfg.ngram_sizes))
        contexts = math.ceil(fwd_tokens / ctx)
        batch = probe_cfg.batch_size
        items.append(WorkItem(nb, f"probes {what}", "forward", analysed * math.ceil(contexts / batch), batch,
                              StepSpec("lm", p.model, "forward"), checkpoints=analysed,
                              detail=f"{analysed} checkpoints × ≈{contexts:,} contexts of {ctx} (validation ± positional "
                                     f"ablation {probe_cfg.num_validation}, synthetic sequences as tokens)"))
    return items


def _lm_host_bytes(p) -> int:
    """Host memory of the token arrays: the int32 train stream, its int32 contexts and the int64
    copy ``language_run`` makes (``load_contexts(...).long()``), for a corpus of exactly the budget."""
    tokens = max(p.corpus.min_train_tokens, p.train.num_steps * p.tokens_per_step)
    return tokens * (4 + 4 + 8)


def plan_lm_stages(profile: str, params: Mapping[str, Any] | None = None) -> NotebookPlan:
    """Notebook 01: the 2-layer LM (main run with probes), its other seeds, the one-layer model."""
    from stagewise.probes.language import lm_probe_config
    from stagewise.profiles import get_profile

    params = dict(params or {})
    seeds = params.get("seeds")
    p = get_profile("language", profile, **({"seeds": tuple(seeds)} if seeds is not None else {}))
    nb = NOTEBOOKS["01"]
    notes = []
    probe_cfg = lm_probe_config(profile)
    budget = p.train.num_steps * p.tokens_per_step
    items = [WorkItem(nb, "tokenize the train split", "tokenize", budget, 1, host_bytes=_lm_host_bytes(p),
                      detail=f"corpus source {p.corpus.source!r}; ≥ {budget / 1e9:.3g}B training tokens needed "
                             f"(min_train_tokens = {p.corpus.min_train_tokens:,}); cached after the first run")]
    if p.corpus.source in ("registry", "sample") and p.corpus.min_train_tokens > 0:
        notes.append(f"corpus: the offline {p.corpus.source!r} corpus cannot meet this profile's "
                     f"{p.corpus.min_train_tokens:,}-token budget: notebook 01 stops at once with instructions "
                     f"(set $STAGEWISE_PAPER_CORPUS to local shards or 'hub')")
    items += _lm_items(nb, p, f"2-layer LM, seed {p.seeds[0]}", probe_cfg, probes=True)
    for seed in p.seeds[1:]:
        items += _lm_items(nb, p.with_seed(seed), f"2-layer LM, seed {seed}", probe_cfg, probes=False)
    if params.get("one_layer", True):
        items += _lm_items(nb, p.one_layer(), "1-layer LM", probe_cfg, probes=True)
    return NotebookPlan(nb, profile, tuple(items), tuple(notes))


def plan_regression_stages(profile: str, params: Mapping[str, Any] | None = None) -> NotebookPlan:
    """Notebook 02: every seed's training and probes, the LLC of ``llc_seeds``."""
    from stagewise.profiles import get_profile

    params = dict(params or {})
    r = get_profile("regression", profile)
    if params.get("seeds") is not None:
        seeds = tuple(params["seeds"])
        r = dataclasses.replace(r, seeds=seeds, llc_seeds=tuple(s for s in r.llc_seeds if s in seeds) or seeds[:1])
    nb = NOTEBOOKS["02"]
    ckpts = len(r.train.checkpoint_steps())
    n_params = _param_count("regression", r.model)
    items = []
    for seed in r.seeds:
        items.append(WorkItem(nb, f"train seed {seed}", "train", r.train.num_steps, r.batch_size,
                              StepSpec("regression", r.model, "train", optimizer=r.train.optimizer), checkpoints=ckpts,
                              disk_bytes=_ckpt_disk(ckpts, n_params),
                              detail=f"{r.train.num_steps:,} steps × batch {r.batch_size}; {ckpts} checkpoints"))
    for seed in r.llc_seeds:
        lp = r.llc_profile(seed)
        s, analysed = lp.sgld, min(lp.num_analysis_checkpoints, ckpts)
        items.append(WorkItem(nb, f"LLC seed {seed}", "sgld", analysed * s.num_chains * s.num_steps, s.batch_size,
                              StepSpec("regression", r.model, "sgld", chains=s.num_chains, variant=r.sgld_loss,
                                       dtype=r.sgld_dtype), checkpoints=analysed,
                              host_bytes=_sgld_set_bytes(r.model, r.num_sgld_samples),
                              detail=f"{analysed} checkpoints × {s.num_chains} chains × ({s.num_burnin} + {s.num_draws}) "
                                     f"steps × m = {s.batch_size}"))
    analysed = min(r.num_analysis_checkpoints, ckpts)
    for seed in r.seeds:
        items.append(WorkItem(nb, f"probes seed {seed}", "forward", analysed * REGRESSION_PROBE_PASSES, r.num_eval,
                              StepSpec("regression", r.model, "forward"), checkpoints=analysed,
                              detail=f"{analysed} checkpoints × ≈{REGRESSION_PROBE_PASSES} passes of {r.num_eval} sequences"))
    return NotebookPlan(nb, profile, tuple(items))


def plan_transient_ridge(profile: str, params: Mapping[str, Any] | None = None) -> NotebookPlan:
    """Notebook 03: one training run per task diversity, every checkpoint's outputs, final LLCs."""
    from stagewise.profiles import get_profile

    q = get_profile("ridge", profile)
    nb = NOTEBOOKS["03"]
    runs = len(q.task_diversities)
    ckpts = len(q.train.checkpoint_steps())
    n_params = _param_count("regression", q.model)
    s = q.sgld
    rows = 2 * q.num_eval + q.pca_batch
    items = [
        WorkItem(nb, f"train {runs} runs (M = {q.m_grid[0]}…{q.m_grid[-1]}, ∞)", "train", runs * q.train.num_steps,
                 q.batch_size, StepSpec("regression", q.model, "train", optimizer=q.train.optimizer),
                 checkpoints=runs * ckpts, disk_bytes=_ckpt_disk(runs * ckpts, n_params),
                 detail=f"{runs} × {q.train.num_steps:,} steps × batch {q.batch_size}; {n_params:,} params; "
                        f"{ckpts} checkpoints each; executor {q.executor!r}"),
        WorkItem(nb, "outputs at every checkpoint", "forward", runs * ckpts, rows,
                 StepSpec("regression", q.model, "forward"), checkpoints=runs * ckpts,
                 detail=f"{runs * ckpts:,} checkpoints × {rows:,} sequences (q_∞, q_M, PCA batch)"),
        WorkItem(nb, "LLC of the final models", "sgld", runs * s.num_chains * s.num_steps, s.batch_size,
                 StepSpec("regression", q.model, "sgld", chains=s.num_chains, variant=q.sgld_loss, dtype=q.sgld_dtype),
                 checkpoints=runs,
                 host_bytes=_sgld_set_bytes(q.model, q.num_sgld_samples),
                 detail=f"{runs} models × {s.num_chains} chains × ({s.num_burnin} + {s.num_draws}) steps × m = {s.batch_size}"),
    ]
    notes = []
    if q.executor == "processes":
        notes.append("trains the runs in one process per core (os.cpu_count()): time shown is the serial sum")
    return NotebookPlan(nb, profile, tuple(items), tuple(notes))


def plan_rllc_heads(profile: str, params: Mapping[str, Any] | None = None) -> NotebookPlan:
    """Notebook 04: per-head w(d)rLLC and whole-model drLLC on notebook 01's checkpoints, ablations."""
    from stagewise.probes.language import lm_probe_config
    from stagewise.profiles import get_profile

    c = get_profile("rllc", profile)
    lm = get_profile("language", c.language)
    nb = NOTEBOOKS["04"]
    ckpts = len(lm.train.checkpoint_steps())
    analysed_lm = min(lm.num_analysis_checkpoints, ckpts)
    k = min(c.num_checkpoints, analysed_lm - 1)  # analysis_steps(language_analysis_steps(...)[1:], n)
    heads = len(c.heads) if c.heads else lm.model.n_layers * lm.model.n_heads
    head_domains = len(c.head_domains) if c.head_domains is not None else len(c.domains)
    s, ls = c.sgld, lm.sgld
    # notebook 04 runs language_sgld_model(lm) (the LM profile's loss path) at the LM profile's sgld_dtype
    sgld = StepSpec("lm", lm.model, "sgld", stride=lm.sgld_stride, chains=s.num_chains, variant=lm.sgld_model,
                    dtype=lm.sgld_dtype)
    items = [WorkItem(nb, "notebook 01's 2-layer LM (if not cached)", "train", lm.train.num_steps, lm.batch_size,
                      StepSpec("lm", lm.model, "train", optimizer=lm.train.optimizer),
                      tokens=lm.train.num_steps * lm.tokens_per_step, conditional="only if notebook 01 has not run",
                      detail="the language run 01 trains; cached")]
    items += [
        WorkItem(nb, "per-head wrLLC (train)", "sgld", k * heads * s.num_chains * s.num_steps, s.batch_size, sgld,
                 checkpoints=k, detail=f"{k} checkpoints × {heads} heads × {s.num_chains} chains × "
                                       f"({s.num_burnin} + {s.num_draws}) steps × batch {s.batch_size}"),
        WorkItem(nb, f"per-head wdrLLC ({head_domains} domain{'s' * (head_domains != 1)})", "sgld",
                 k * heads * head_domains * s.num_chains * s.num_steps, s.batch_size, sgld, checkpoints=k,
                 detail=f"{k} × {heads} heads × {head_domains} × {s.num_chains} chains × ({s.num_burnin} + {s.num_draws})"),
        WorkItem(nb, "whole-model drLLC (train + domains)", "sgld", k * (1 + len(c.domains)) * ls.num_chains * ls.num_steps,
                 ls.batch_size, StepSpec("lm", lm.model, "sgld", stride=lm.sgld_stride, chains=ls.num_chains,
                                         variant=lm.sgld_model, dtype=lm.sgld_dtype),
                 checkpoints=k, detail=f"{k} × {1 + len(c.domains)} data sets × {ls.num_chains} chains × "
                                       f"({ls.num_burnin} + {ls.num_draws}) steps × batch {ls.batch_size}"),
    ]
    probe_cfg = lm_probe_config(lm.name)
    fwd = StepSpec("lm", lm.model, "forward")
    contexts = math.ceil((2 * probe_cfg.num_validation * lm.model.n_ctx + probe_cfg.previous_token_sequences
                          * sum(probe_cfg.previous_token_lengths) + probe_cfg.prefix_sequences * probe_cfg.prefix_length)
                         / lm.model.n_ctx)
    batch = 16  # stagewise.probes.ablation's batch_size
    ablation = k * (c.ablation_contexts + 3 * 256) + (1 + heads) * c.ablation_contexts
    items += [
        WorkItem(nb, "probes at these checkpoints (if not cached)", "forward",
                 k * math.ceil(contexts / probe_cfg.batch_size), probe_cfg.batch_size, fwd, checkpoints=k,
                 conditional="only if notebook 01 has not probed these checkpoints",
                 detail=f"{k} checkpoints × ≈{contexts:,} contexts"),
        WorkItem(nb, "mean ablation, per-head ICL, tokens in context", "forward", math.ceil(ablation / batch), batch, fwd,
                 checkpoints=k, host_bytes=c.ablation_contexts * lm.model.n_ctx * 8,
                 detail=f"{k} × ({c.ablation_contexts:,} reference + 3 × 256) contexts + (1 + {heads} heads) × "
                        f"≤{c.ablation_contexts:,} at the last checkpoint (upper bound)"),
    ]
    return NotebookPlan(nb, profile, tuple(items), depends_on=NOTEBOOKS["01"])


def plan_hessian(profile: str, params: Mapping[str, Any] | None = None) -> NotebookPlan:
    """Notebook 05: toy potentials, Hessian trace and top eigenvalue over notebook 02's run."""
    from stagewise.potentials import POTENTIALS
    from stagewise.profiles import get_profile

    h = get_profile("hessian", profile)
    r = get_profile("regression", profile)
    nb = NOTEBOOKS["05"]
    ckpts = len(r.train.checkpoint_steps())
    analysed = min(h.num_checkpoints, ckpts)
    toy_steps = len(POTENTIALS) * h.toy_chains * (h.toy_draws + h.toy_draws // 5)
    lp = r.llc_profile(r.seeds[0]) if r.seeds[0] in r.llc_seeds else r
    s = lp.sgld
    items = [
        WorkItem(nb, f"toy potentials ({len(POTENTIALS)})", "toy", toy_steps, 1,
                 detail=f"{len(POTENTIALS)} × {h.toy_chains} chains × ({h.toy_draws // 5} + {h.toy_draws}) steps"),
        WorkItem(nb, "Hessian trace + top eigenvalue", "hvp", analysed * (h.num_probes + HVPS_PER_LANCZOS),
                 h.hessian_batch, StepSpec("regression", r.model, "hvp"), checkpoints=analysed,
                 detail=f"{analysed} checkpoints × ({h.num_probes} Hutchinson probes + ≈{HVPS_PER_LANCZOS} Lanczos) "
                        f"HVPs × m = {h.hessian_batch}"),
        WorkItem(nb, "notebook 02's seed-0 run (if not cached)", "train", r.train.num_steps, r.batch_size,
                 StepSpec("regression", r.model, "train", optimizer=r.train.optimizer),
                 conditional="only if notebook 02 has not run", detail="cached by 02"),
        WorkItem(nb, "notebook 02's seed-0 LLC (if not cached)", "sgld",
                 min(lp.num_analysis_checkpoints, ckpts) * s.num_chains * s.num_steps, s.batch_size,
                 StepSpec("regression", r.model, "sgld", chains=s.num_chains, variant=r.sgld_loss, dtype=r.sgld_dtype),
                 conditional="only if notebook 02 has not run", detail="cached by 02"),
    ]
    return NotebookPlan(nb, profile, tuple(items), depends_on=NOTEBOOKS["02"])


PLANNERS: dict[str, Callable[[str, Mapping[str, Any] | None], NotebookPlan]] = {
    "01": plan_lm_stages, "02": plan_regression_stages, "03": plan_transient_ridge, "04": plan_rllc_heads,
    "05": plan_hessian,
}


def plan_profile(profile: str, notebooks: list[str] | None = None,
                 params: Mapping[str, Any] | None = None) -> ProfilePlan:
    """The work of ``profile`` (any name in :data:`stagewise.profiles.PROFILE_NAMES`) per notebook.

    ``notebooks``: number prefixes or stems (default all); ``params``: the notebooks' parameters-cell
    overrides that change the work (``seeds``, ``one_layer``), as ``stagewise-figures -p`` passes them.
    """
    from stagewise.profiles import check_profile

    check_profile(profile)
    chosen = list(PLANNERS) if not notebooks else []
    for name in notebooks or []:
        prefix = str(name)[:2]
        if prefix not in PLANNERS:
            raise ValueError(f"no plan for notebook {name!r}; known: {', '.join(NOTEBOOKS.values())}")
        chosen.append(prefix)
    return ProfilePlan(profile, tuple(PLANNERS[k](profile, params) for k in chosen))


# ---------------------------------------------------------------------------------------- memory


def _live_bytes():
    """A dispatch mode counting the live bytes of the storages operations create (high-water mark)
    and the bytes they write (torch is imported lazily: the runner imports this module)."""
    import torch

    class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = self.written = 0
            self._refs: dict[int, weakref.ref] = {}

        def _track(self, t) -> None:
            st = t.untyped_storage()
            key = id(st)
            if key in self._refs:
                return
            n = st.nbytes()
            self.live += n
            self.written += n
            self.peak = max(self.peak, self.live)

            def freed(_ref, key=key, n=n):
                self.live -= n
                self._refs.pop(key, None)

            self._refs[key] = weakref.ref(st, freed)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in torch.utils._pytree.tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._track(t)
            return out

    return LiveBytes()


@dataclass(frozen=True)
class StepTrace:
    """One step traced at full shape on the meta device: ``peak_bytes`` = high-water mark of the
    tensors the step creates (activations, gradients, optimizer state, chain state) plus
    ``static_bytes`` (parameters, buffers and the batch); ``flops`` = matmul FLOPs;
    ``written_bytes`` = bytes written by all operations (a proxy for memory traffic)."""

    spec: StepSpec
    batch: int
    chain_mode: str
    peak_bytes: int
    static_bytes: int
    flops: float
    written_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes + self.static_bytes


def _build(spec: StepSpec, batch: int, device: str, seed: int = 0):
    """(model, batch tuple) for ``spec`` on ``device`` (meta: shapes only)."""
    import torch

    torch.manual_seed(seed)
    if spec.family == "lm":
        from stagewise.models.language import make_language_model

        if spec.kind == "sgld" and spec.variant == "fast":
            from stagewise.models.language_fast import make_fast_language_model

            model = make_fast_language_model(spec.model).to(device)
        else:
            model = make_language_model(spec.model, device=device)
        if device == "meta":
            tokens = torch.empty(batch, spec.model.n_ctx, dtype=torch.long, device="meta")
        else:
            tokens = torch.randint(0, spec.model.d_vocab, (batch, spec.model.n_ctx), device=device)
        return model, (tokens,)
    from stagewise.models.regression import RegressionTransformer

    model = RegressionTransformer(spec.model).to(device)
    shape_t, shape_y = (batch, spec.model.n_ctx, spec.model.token_size), (batch, spec.model.max_examples)
    if device == "meta":
        return model, (torch.empty(shape_t, device="meta"), torch.empty(shape_y, device="meta"))
    return model, (torch.randn(shape_t, device=device), torch.randn(shape_y, device=device))


def _train_loss(spec: StepSpec):
    if spec.family == "lm":
        from stagewise.models.language import per_token_loss

        return lambda model, b: per_token_loss(model(b[0], return_type="logits"), b[0]).mean()
    from stagewise.data.regression import regression_loss

    return regression_loss


def _module_loss(spec: StepSpec):
    """The ``loss(forward, batch)`` the notebooks' SGLD and Hessians use for this step."""
    from functools import partial

    if spec.family == "lm" and spec.kind == "sgld" and spec.variant == "fast":
        from stagewise.models.language_fast import lm_fast_loss

        return lm_fast_loss if spec.stride == 1 else partial(lm_fast_loss, stride=spec.stride)
    if spec.family == "lm":
        from stagewise.models.language import lm_forward_loss, lm_forward_loss_subsampled

        return lm_forward_loss if spec.stride == 1 else partial(lm_forward_loss_subsampled, stride=spec.stride)
    from stagewise.data.regression import regression_forward_loss, regression_sgld_loss

    return regression_sgld_loss(spec.variant) if spec.kind == "sgld" and spec.variant else regression_forward_loss


def _flat(model, spec: StepSpec):
    import torch

    from stagewise.llc.module import module_loss_fn

    loss_fn, params = module_loss_fn(model, _module_loss(spec))
    names = list(params)
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def flat_loss(theta, batch):
        out, o = {}, 0
        for n, s in zip(names, shapes):
            out[n] = theta[o:o + s.numel()].view(s)
            o += s.numel()
        return loss_fn(out, batch)

    return flat, flat_loss, loss_fn, params


def _run_step(spec: StepSpec, model, batch, chain_mode: str = "loop", reference_only: bool = False) -> None:
    """One step of ``spec`` (the arithmetic the pipeline runs; used for tracing). ``reference_only``:
    of an SGLD step, only the gradient-free ℓ(w*) pass of the draw's batch."""
    import torch

    if spec.kind == "train":
        cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
        opt = cls(model.parameters(), lr=1e-3)
        model.train()
        _train_loss(spec)(model, batch).backward()
        opt.step()
    elif spec.kind == "forward":
        with torch.no_grad():
            model.eval()
            _train_loss(spec)(model, batch)
    elif spec.kind == "sgld":
        model.eval()
        flat, flat_loss, _, _ = _flat(model, spec)
        with torch.no_grad():
            flat_loss(flat, batch)  # ℓ(w*) of the draw's batch
            if reference_only:
                return
            theta = flat.unsqueeze(0).repeat(spec.chains, 1)
            with torch.enable_grad():
                if chain_mode == "vmap":
                    g, _ = torch.func.vmap(torch.func.grad_and_value(flat_loss), in_dims=(0, None))(theta, batch)
                else:
                    x = theta[0].detach().requires_grad_(True)
                    (g0,) = torch.autograd.grad(flat_loss(x, batch), x)
                    g = torch.stack([g0] * spec.chains)
            noise = torch.randn_like(theta)
            theta = theta + (-0.5e-3 * (g + (theta - flat)) + noise)
    elif spec.kind == "hvp":
        from stagewise.hessian import hvp

        model.eval()
        _, _, loss_fn, params = _flat(model, spec)
        hvp(loss_fn, params, batch, {n: torch.ones_like(p) for n, p in params.items()})
    else:
        raise ValueError(f"no step for kind {spec.kind!r}")


def trace_step(spec: StepSpec, batch: int, chain_mode: str = "loop", reference_only: bool = False) -> StepTrace:
    """Run one step of ``spec`` with ``batch`` rows on the meta device: no memory is allocated.

    ``chain_mode`` ('loop' or 'vmap') applies to SGLD: the sampler's CPU default runs the chains one
    after another (memory of one chain's backward), its CUDA default vmaps them (all chains' at once).
    ``reference_only``: trace only an SGLD step's gradient-free ℓ(w*) pass.
    """
    import torch

    from torch.utils.flop_counter import FlopCounterMode

    if chain_mode not in ("loop", "vmap"):
        raise ValueError(f"chain_mode must be 'loop' or 'vmap', got {chain_mode!r}")
    model, data = _build(spec, batch, "meta")
    static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()) + list(data))
    tracker = _live_bytes()
    with FlopCounterMode(display=False) as counter, tracker:
        _run_step(spec, model, data, chain_mode, reference_only)
    return StepTrace(spec, batch, chain_mode, tracker.peak, static, float(counter.get_total_flops()), tracker.written)


# ---------------------------------------------------------------------------------------- time


@dataclass(frozen=True)
class StepTime:
    """Seconds per step of one timing key at ``batch`` rows, and how the number was obtained
    (``how``: 'measured', or 'modelled: ...'). ``forward_seconds``: a no-grad pass at the same batch
    (the ℓ(w*) pass of each SGLD draw, shared by the chains). ``memory_bytes``: the device's
    high-water mark during the measurement, where known."""

    seconds: float
    batch: int
    how: str = "measured"
    forward_seconds: float = 0.0
    memory_bytes: int = 0


@dataclass
class Calibration:
    """Per-step costs on one device (``times`` by :attr:`StepSpec.timing_key`; ``toy`` seconds per toy
    chain-step; ``tokenize`` tokens per second), with a description of the device and conditions."""

    device: str
    description: str
    times: dict[tuple, StepTime] = field(default_factory=dict)
    toy_seconds: float = float("nan")
    tokenize_per_s: float = float("nan")
    notes: list[str] = field(default_factory=list)
    label: str = ""

    def step_seconds(self, spec: StepSpec, batch: int) -> float:
        """Seconds of one step of ``spec`` at ``batch`` rows: the time at the measured batch scaled
        linearly in rows; an SGLD chain-step adds its 1/chains share of the ℓ(w*) pass."""
        t = self.times.get(spec.timing_key)
        if t is None:
            raise KeyError(f"no calibration for {spec.label()}")
        scale = batch / t.batch
        seconds = t.seconds * scale
        if spec.kind == "sgld":
            seconds += t.forward_seconds * scale / spec.chains
        return seconds


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _graphed_on(spec: StepSpec, device: str) -> bool:
    """Whether the pipeline replays ``spec`` as a CUDA graph on ``device`` (and so the calibration
    times it that way): the regression transformer's training and SGLD steps on CUDA."""
    return str(device).startswith("cuda") and spec.family == "regression" and spec.kind in ("train", "sgld")


def _timed_mode(spec: StepSpec, device: str) -> str:
    """The chain layout a calibration on ``device`` measured ``spec`` in (for its traced memory)."""
    return "vmap" if spec.kind == "sgld" and _graphed_on(spec, device) else "loop"


def _timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (lazy initialisation, allocator, kernels)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def measure_step(spec: StepSpec, batch: int, device: str = "cpu", repeats: int = 1, sgld_draws: int = 2) -> StepTime:
    """Time real steps of ``spec`` at ``batch`` rows on ``device``.

    train: fwd + bwd + Adam(W) step; forward: a no-grad pass; sgld:
    :func:`stagewise.llc.estimate_llc_module` with 1 chain × ``sgld_draws`` draws (plus one warm-up
    call), its time less the ℓ(w*) passes, which are measured separately (``forward_seconds``);
    hvp: one Hessian-vector product by forward-over-reverse (:func:`stagewise.hessian.hvp`).
    On CUDA the regression transformer's steps are timed as the pipeline runs them there: training
    replayed as a CUDA graph (:func:`stagewise.runs.regression_run`), SGLD with ``spec.chains``
    vmapped chains replayed as a CUDA graph (:func:`stagewise.runs.regression_llc`), per step the
    difference of a 120- and a 20-draw run (each call captures its own graph).
    """
    import torch

    from stagewise.llc import SGLDConfig, estimate_llc_module

    cuda = str(device).startswith("cuda")
    graphed = _graphed_on(spec, device)
    if cuda:  # the previous measurement's tensors are gone before this one's high-water mark starts
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if spec.kind == "sgld":
        batch = max(batch, 2)  # SGLD needs m >= 2
    model, data = _build(spec, batch, device)
    loss = _train_loss(spec)

    def forward():  # of an SGLD step: its ℓ(w*) pass, through the sweeps' loss path
        with torch.no_grad():
            if spec.kind == "sgld":
                _module_loss(spec)(model.eval(), data)
            else:
                loss(model.eval(), data)

    fwd = _timed(forward, device, repeats)
    if spec.kind == "forward":
        seconds = fwd
    elif spec.kind == "train":
        cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
        if graphed:  # runs.regression_run and transient_ridge_run replay the step as a CUDA graph there
            from stagewise.train import TrainConfig, _GraphedStep

            opt = cls(model.parameters(), lr=torch.tensor(1e-3, device=device), capturable=True)
            model.train()
            step = _GraphedStep(model, opt, loss, data, TrainConfig())
            seconds = _timed(lambda: step(data), device, max(repeats, 50))
        else:
            opt = cls(model.parameters(), lr=1e-3)

            def train_step():
                model.train()
                opt.zero_grad(set_to_none=True)
                loss(model, data).backward()
                opt.step()

            seconds = _timed(train_step, device, repeats)
    elif spec.kind == "sgld":
        data = tuple(torch.cat([t, t]) for t in data)  # two batches' worth of rows
        # as the sweeps run it: on CUDA the regression sweeps vmap their chains and replay each step
        # as a CUDA graph (runs.regression_llc, transient_ridge.final_llcs); elsewhere one chain, looped
        chains = spec.chains if graphed else 1
        cfg = SGLDConfig(epsilon=1e-7, gamma=100.0, nbeta=10.0, num_chains=chains, num_draws=sgld_draws, num_burnin=0,
                         batch_size=batch, seed=0)
        from stagewise.llc import resolve_compute_dtype

        model.eval()
        kw = dict(chain_mode="vmap" if graphed else "loop", cuda_graph=graphed,
                  compute_dtype=resolve_compute_dtype(spec.dtype, device), progress=False)
        if graphed:  # per step: the difference of two runs (each call captures its own graph)
            short, long_ = (estimate_llc_module(model, _module_loss(spec), data, dataclasses.replace(cfg, num_draws=n),
                                                **kw) for n in (20, 120))
            res, per_step = long_, (long_.elapsed_s - short.elapsed_s) / 100
        else:
            if fwd < 0.1:  # cheap steps: one-time costs of the first call would matter; expensive ones: they do not
                estimate_llc_module(model, _module_loss(spec), data, dataclasses.replace(cfg, num_draws=1), **kw)
            res = estimate_llc_module(model, _module_loss(spec), data, cfg, **kw)
            per_step = res.elapsed_s / sgld_draws
        if not math.isfinite(res.llc_mean):
            raise FloatingPointError(f"calibration SGLD of {spec.label()} gave a non-finite estimate")
        # per chain-step, less its share of the ℓ(w*) pass (added back from forward_seconds)
        seconds = max((per_step - fwd) / chains, 0.0)
    elif spec.kind == "hvp":
        from stagewise.hessian import hvp

        _, _, loss_fn, params = _flat(model.eval(), spec)
        vec = {n: torch.ones_like(p) for n, p in params.items()}
        seconds = _timed(lambda: hvp(loss_fn, params, data, vec), device, repeats)
    else:
        raise ValueError(f"cannot time kind {spec.kind!r}")
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return StepTime(seconds, batch, "measured", fwd, peak)


def _cut_batch(spec: StepSpec, batch: int, memory_budget: float, flop_budget: float) -> int:
    """The largest batch <= ``batch`` whose traced memory and FLOPs (linear in rows) fit the budgets."""
    tr = _trace_cached(spec, batch, "loop")
    per_row_bytes = tr.total_bytes / batch
    per_row_flops = max(tr.flops, 1.0) / batch

    def rows(budget: float, per_row: float) -> int:  # an infinite budget caps nothing (inf // x is nan)
        return batch if math.isinf(budget) else int(budget // per_row)

    cut = min(batch, rows(memory_budget, per_row_bytes), rows(flop_budget, per_row_flops))
    return max(cut, 2 if spec.kind == "sgld" else 1)


def _toy_seconds(chains: int = 4, draws: int = 100) -> float:
    from stagewise.llc import SGLDConfig, estimate_llc
    from stagewise.potentials import POTENTIALS

    pot = POTENTIALS["quartic"]
    cfg = SGLDConfig(epsilon=1e-4, gamma=1.0, nbeta=1e3, num_chains=chains, num_draws=draws, num_burnin=0, seed=0)
    res = estimate_llc(pot.fn, pot.params(), cfg, progress=False)
    return res.elapsed_s / (chains * draws)


def _tokenize_rate() -> float:
    from stagewise.data.corpus import SAMPLE_CORPUS
    from stagewise.data.language import tokenize_documents

    texts = [json.loads(line)["text"] for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[:200] if line]
    t0 = time.perf_counter()
    n = tokenize_documents(texts, progress=False).numel()
    return n / (time.perf_counter() - t0)


def _machine() -> str:
    import torch

    try:
        load = ", load average %.1f" % os.getloadavg()[0]
    except OSError:
        load = ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s){load}")


def calibrate(plan: ProfilePlan, device: str = "cpu", memory_budget: float = 1.5 * 2**30,
              flop_budget: float = 1.5e10, repeats: int = 1, progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure each distinct step of ``plan`` on ``device``: a few real steps at the profile's model
    shapes, the batch cut to ``memory_budget`` bytes and ``flop_budget`` FLOPs per step (traced), the
    time then scaled linearly to the profile's batch (:meth:`Calibration.step_seconds`)."""
    import torch

    t0 = time.perf_counter()
    cal = Calibration(device, _machine() if device == "cpu" else f"{torch.cuda.get_device_name()} ({_machine()})",
                      label="this machine" if device == "cpu" else torch.cuda.get_device_name())
    for key, (spec, batch) in plan.specs().items():
        cut = _cut_batch(spec, batch, memory_budget, flop_budget)
        if progress:
            progress(f"calibrating {spec.label()} at batch {cut} (profile: {batch})")
        cal.times[key] = measure_step(spec, cut, device, repeats)
    kinds = {i.kind for i in plan.items}
    if "toy" in kinds:
        cal.toy_seconds = _toy_seconds()
    if "tokenize" in kinds:
        cal.tokenize_per_s = _tokenize_rate()
    cal.notes.append(f"calibration took {time.perf_counter() - t0:.0f} s")
    return cal


# ---------------------------------------------------------------------------------------- GPU model


@dataclass(frozen=True)
class DeviceClass:
    """A GPU class for the projection: dense fp32 (non-tensor-core) peak, memory bandwidth, memory,
    and the utilisations assumed of each (PyTorch runs fp32 matmuls without TF32 by default)."""

    name: str
    fp32_tflops: float
    bandwidth_tbs: float
    memory_gib: float
    source: str
    flop_utilisation: float = 0.5
    bandwidth_utilisation: float = 0.6


GPU_CLASSES = {
    "h100": DeviceClass("NVIDIA H100 SXM 80GB", 67.0, 3.35, 80.0, "NVIDIA datasheet: FP32 67 TFLOP/s, HBM3 3.35 TB/s"),
    "a100": DeviceClass("NVIDIA A100 SXM 80GB", 19.5, 2.04, 80.0, "NVIDIA datasheet: FP32 19.5 TFLOP/s, HBM2e 2.04 TB/s"),
}
CUDA_BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "llc_benchmark_cuda.json"


def _h100_floor() -> tuple[float, float, str]:
    """Per-step floors (seconds) measured on an H100 for the 51,717-parameter regression transformer,
    m = 1024 (fwd + bwd per chain-step): (loop, vmap, source); NaN when the file is absent."""
    try:
        rows = {r["name"]: r for r in json.loads(CUDA_BENCHMARK.read_text())}
        return 1 / rows["loop"]["steps_per_s"], 1 / rows["vmap"]["steps_per_s"], CUDA_BENCHMARK.name
    except (OSError, KeyError, ValueError):
        return float("nan"), float("nan"), "none"


def gpu_model(plan: ProfilePlan, gpu: DeviceClass | str = "h100") -> Calibration:
    """A projected calibration for ``gpu``: per step, traced FLOPs / (peak × utilisation) + traced
    bytes written × 2 (written once, read once) / (bandwidth × utilisation), and for the
    regression transformer at least the per-step time measured on an H100 at the same kind of step
    (it is launch-bound there). Not a measurement: labelled as a projection."""
    gpu = GPU_CLASSES[gpu] if isinstance(gpu, str) else gpu
    loop_floor, vmap_floor, source = _h100_floor()
    cal = Calibration("cuda", f"{gpu.name}: projection ({gpu.source}; assumed {gpu.flop_utilisation:.0%} of the FLOP "
                              f"peak and {gpu.bandwidth_utilisation:.0%} of the bandwidth)", label=f"{gpu.name} (model)")

    def seconds(tr: StepTrace) -> float:
        return (tr.flops / (gpu.fp32_tflops * 1e12 * gpu.flop_utilisation)
                + 2 * tr.written_bytes / (gpu.bandwidth_tbs * 1e12 * gpu.bandwidth_utilisation))

    for key, (spec, batch) in plan.specs().items():
        tr = _trace_cached(spec, batch, "loop")
        fwd = (_trace_cached(spec, batch, "loop", True) if spec.kind == "sgld"
               else _trace_cached(dataclasses.replace(spec, kind="forward"), batch, "loop"))
        t, how = seconds(tr), f"modelled from traced FLOPs and bytes at batch {batch}"
        if spec.kind == "sgld":
            t -= seconds(fwd)  # the traced SGLD step includes one ℓ(w*) pass; Calibration adds 1/chains of it
        # the regression transformer is launch-bound on a GPU: a step costs at least what one
        # measured H100 chain-step did (fwd + bwd; a forward pass alone: a third of it, assumed)
        floor = {"sgld": vmap_floor, "forward": loop_floor / 3}.get(spec.kind, loop_floor)
        if spec.family == "regression" and math.isfinite(floor) and t < floor:
            t, how = floor, (f"floor: a fwd + bwd of the 51,717-param regression transformer measured on an H100 "
                             f"({source}); launch-bound, not scaled in batch")
        cal.times[key] = StepTime(t, batch, how, seconds(fwd))
    # toy potentials and tokenization run on the host CPU (Calibration of this machine)
    cal.notes.append(f"regression-transformer floors from {source}: {loop_floor * 1e3:.1f} ms per fwd + bwd "
                     f"(chains looped), {vmap_floor * 1e3:.1f} ms per chain-step (vmapped), m = 1024, H100")
    return cal


# ---------------------------------------------------------------------------------------- report


def item_seconds(item: WorkItem, cal: Calibration, host: Calibration | None = None) -> float:
    """Seconds of one work item on the device of ``cal``; tokenization and toy potentials run on the
    host CPU, so a calibration without them (a GPU's) takes them from ``host``."""
    if item.kind == "tokenize":
        rate = cal.tokenize_per_s if math.isfinite(cal.tokenize_per_s) else (host.tokenize_per_s if host else math.nan)
        return item.count / rate
    if item.kind == "toy":
        per = cal.toy_seconds if math.isfinite(cal.toy_seconds) else (host.toy_seconds if host else math.nan)
        return item.count * per
    return item.count * cal.step_seconds(item.spec, item.batch)


def notebook_seconds(nb: NotebookPlan, cal: Calibration, host: Calibration | None = None,
                     include_conditional: bool = False) -> float:
    return sum(item_seconds(i, cal, host) for i in nb.items if include_conditional or not i.conditional)


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _fmt_bytes(b: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b / 1e3:.0f} kB"


@functools.lru_cache(maxsize=256)
def _trace_cached(spec: StepSpec, batch: int, chain_mode: str, reference_only: bool = False) -> StepTrace:
    return trace_step(spec, batch, chain_mode, reference_only)


def item_memory(item: WorkItem) -> dict[str, int]:
    """Traced peak bytes of one step of ``item`` at its batch: ``{"loop": ...}``, and for SGLD with
    several chains also ``"vmap"`` (the sampler's CUDA default, all chains' activations at once)."""
    if item.spec is None:
        return {}
    out = {"loop": _trace_cached(item.spec, item.batch, "loop").total_bytes}
    if item.kind == "sgld" and item.spec.chains > 1:
        out["vmap"] = _trace_cached(item.spec, item.batch, "vmap").total_bytes
    return out


PAPER_REPORTED = (
    "the paper (App. D.1.3-D.1.4) reports ~6 A100-hours to train one LM and ~200 A100-hours (2-layer) / ~125 "
    "(1-layer) for the LLC at all analysed checkpoints")


def _device_note() -> str | None:
    """Whether the pipeline's training loop can place a model on a GPU at all (read from its signature)."""
    import inspect

    from stagewise.train import train

    if "device" not in inspect.signature(train).parameters:
        return ("the training loop (stagewise.train.train) has no device argument: the notebooks train on the "
                "CPU even on a GPU machine; the GPU times assume the pipeline runs there")
    return None


def plan_report(plan: ProfilePlan, cpu: Calibration | None, gpu: Calibration | None,
                gpu_class: DeviceClass | None = None) -> dict:
    """The plan as plain data: per notebook its items (count, batch, detail, seconds per device,
    traced peak memory) and totals; per distinct step its cost on each device and how it was
    obtained; a cross-check of the A100 model against the paper's reported GPU hours."""
    cals = [c for c in (cpu, gpu) if c is not None]
    notebooks = []
    for nb in plan.notebooks:
        rows = []
        for item in nb.items:
            row = {"what": item.what, "kind": item.kind, "count": item.count, "batch": item.batch,
                   "tokens": item.tokens, "checkpoints": item.checkpoints, "disk_bytes": item.disk_bytes,
                   "host_bytes": item.host_bytes, "detail": item.detail, "conditional": item.conditional,
                   "seconds": {c.label: item_seconds(item, c, cpu) for c in cals}}
            if item.spec is not None:
                row["step"] = item.spec.label()
                row["peak_bytes"] = item_memory(item)
            rows.append(row)
        notebooks.append({"notebook": nb.notebook, "depends_on": nb.depends_on, "notes": list(nb.notes), "items": rows,
                          "seconds": {c.label: notebook_seconds(nb, c, cpu) for c in cals},
                          "disk_bytes": nb.disk_bytes, "host_bytes": nb.host_bytes})
    steps = []
    for key, (spec, batch) in plan.specs().items():
        entry = {"step": spec.label(), "profile_batch": batch, "devices": {}}
        for c in cals:
            t = c.times[key]
            entry["devices"][c.label] = {"seconds": t.seconds, "batch": t.batch, "how": t.how,
                                         "forward_seconds": t.forward_seconds,
                                         "seconds_at_profile_batch": t.seconds * batch / t.batch,
                                         "memory_bytes": t.memory_bytes or None,
                                         "traced_bytes": _trace_cached(spec, t.batch, _timed_mode(spec, c.device))
                                         .total_bytes}
        steps.append(entry)
    extra = {}
    if cpu is not None:
        extra["toy_chain_step_seconds"] = cpu.toy_seconds
        extra["tokenize_tokens_per_s"] = cpu.tokenize_per_s
    check = _paper_cross_check(plan)
    total = {c.label: sum(n["seconds"][c.label] for n in notebooks) for c in cals}
    notes = [n for n in (_device_note(),) if n]
    if gpu_class is not None:
        too_big = sorted({(r["step"], r["batch"], r["peak_bytes"]["vmap"]) for nb in notebooks for r in nb["items"]
                          if r.get("peak_bytes", {}).get("vmap", 0) > gpu_class.memory_gib * 2**30})
        for step, batch, size in too_big:
            notes.append(f"{step} at batch {batch}: chains vmapped need {_fmt_bytes(size)} > {gpu_class.memory_gib:g} GiB; "
                         "the language-model sweeps (runs.language_llc, refined.head_llc_sweep and "
                         "data_llc_sweep) run chains in a loop (chain_mode='loop'), as this plan times them")
    return {"profile": plan.profile, "notebooks": notebooks, "total_seconds": total, "steps": steps, "host": extra,
            "devices": {c.label: {"description": c.description, "notes": c.notes} for c in cals},
            "gpu_memory_gib": gpu_class.memory_gib if gpu_class else None, "cross_check": check, "notes": notes}


def _paper_cross_check(plan: ProfilePlan) -> list[str]:
    """The A100 projection of notebook 01's main training run and 2-layer LLC beside the paper's hours."""
    nb = next((n for n in plan.notebooks if n.notebook == NOTEBOOKS["01"]), None)
    if nb is None or plan.profile != "paper":
        return []
    a100 = gpu_model(ProfilePlan(plan.profile, (nb,)), "a100")
    train = next(i for i in nb.items if i.kind == "train")
    llc = next(i for i in nb.items if i.kind == "sgld")
    one = [i for i in nb.items if i.kind == "sgld" and i.what.startswith("LLC 1-layer")]
    out = [f"A100 model: train one 2-layer LM {item_seconds(train, a100) / 3600:.1f} h, its LLC "
           f"{item_seconds(llc, a100) / 3600:.0f} h"
           + (f", the 1-layer LLC {item_seconds(one[0], a100) / 3600:.0f} h" if one else ""), PAPER_REPORTED]
    return out


def format_plan(report: dict) -> str:
    """The report of :func:`plan_report` as text tables (what ``stagewise-figures --plan`` prints)."""
    labels = list(report["total_seconds"])
    gpu_mem = report.get("gpu_memory_gib")
    lines = [f"Plan of the {report['profile']!r} profile (nothing is trained)"]
    for label, dev in report["devices"].items():
        lines.append(f"  [{label}] {dev['description']}" + (f"; {'; '.join(dev['notes'])}" if dev["notes"] else ""))
    lines += [f"  NOTE: {n}" for n in report.get("notes", [])]
    lines.append("  peak memory: traced at the full batch on the meta device (one step; 'vmap' = all SGLD chains "
                 "vmapped, the sampler's CUDA default; the first number: chains one after another)")
    for nb in report["notebooks"]:
        lines += ["", f"## {nb['notebook']}" + (f"  (after {nb['depends_on']}: reads its cache)" if nb["depends_on"] else "")]
        head = ["work", "steps", "batch", "peak memory"] + [f"time: {label}" for label in labels]
        table = [head]
        for r in nb["items"]:
            mem = ""
            if "peak_bytes" in r:
                mem = _fmt_bytes(r["peak_bytes"]["loop"])
                if "vmap" in r["peak_bytes"]:
                    vm = r["peak_bytes"]["vmap"]
                    flag = " (does not fit)" if gpu_mem and vm > gpu_mem * 2**30 else ""
                    mem += f"; vmap {_fmt_bytes(vm)}{flag}"
            count = f"{r['count']:,}" + (" tokens" if r["kind"] == "tokenize" else "")
            batch = "–" if r["kind"] in ("tokenize", "toy") else str(r["batch"])
            table.append([r["what"] + (" *" if r["conditional"] else ""), count, batch, mem]
                         + [_fmt_time(r["seconds"][label]) for label in labels])
        lines += _table(table)
        lines += [f"    {r['what']}: {r['detail']}" for r in nb["items"]]
        extra = [f"checkpoints on disk {_fmt_bytes(nb['disk_bytes'])}"]
        if nb["host_bytes"]:
            extra.append(f"host memory for data ≥ {_fmt_bytes(nb['host_bytes'])}")
        lines.append("  total: " + ", ".join([f"{label} {_fmt_time(nb['seconds'][label])}" for label in labels] + extra))
        lines += [f"  note: {n}" for n in nb["notes"]]
        if any(r["conditional"] for r in nb["items"]):
            lines.append("  * only when the notebook it depends on has not run (not in the total)")
    lines += ["", "## per-step costs behind the plan (seconds per step; SGLD: per chain-step, without its ℓ(w*) share)"]
    table = [["step", "profile batch"] + labels]
    for st in report["steps"]:
        cells = []
        for label in labels:
            d = st["devices"][label]
            cells.append(f"{d['seconds']:.4g} s at batch {d['batch']} ({d['how'].split(' (')[0]})")
        table.append([st["step"], str(st["profile_batch"])] + cells)
    lines += _table(table)
    host = report.get("host") or {}
    if host:
        lines.append(f"  host CPU: toy-potential chain-step {host['toy_chain_step_seconds'] * 1e6:.0f} µs (measured); "
                     f"tokenizer {host['tokenize_tokens_per_s']:,.0f} tokens/s on one process (measured)")
    if report.get("cross_check"):
        lines += ["", "## cross-check of the GPU model"] + [f"  {c}" for c in report["cross_check"]]
    lines += ["", "## total (notebooks in order, conditional work excluded)"]
    lines += [f"  {label}: {_fmt_time(report['total_seconds'][label])}" for label in labels]
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out
