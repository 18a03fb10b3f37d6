"""Cached training runs of each setting: the one place a notebook asks for a trained model.

``regression_run(profile, seed)`` trains the regression transformer of a profile (or loads it from
the artifact cache, or resumes it) and returns a :class:`~stagewise.train.TrainedRun`;
``language_run(profile)`` does the same for the attention-only language model (building the corpus
first if it is missing). ``regression_llc``, ``regression_hessian`` and ``regression_probes`` compute
the per-checkpoint curves of a regression run (LLC, Hessian trace and top eigenvalue, App. C probes),
cached per checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from stagewise.cache import HASH_OMIT_DEFAULT
from stagewise.data.regression import (RegressionBatches, RegressionTask, regression_sgld_loss, regression_train_loss,
                                       sgld_dataset)
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig
from stagewise.profiles.regression import RegressionProfile
from stagewise.shipped import run_identity
from stagewise.train import TrainConfig, TrainedRun, train_cached

__all__ = ["RegressionRunKey", "regression_run", "regression_run_directory", "regression_llc", "regression_hessian", "LanguageRunKey",
           "language_run", "regression_probe_batch", "regression_probes", "language_analysis_steps", "language_llc",
           "language_sgld_model", "regression_outputs", "language_outputs", "ED_NUM_SEQUENCES", "ED_NUM_CONTEXTS",
           "ED_POSITION_STRIDE", "language_sgld_contexts", "language_offset_drops", "OFFSET_PROBE", "RefinedInputs",
           "rllc_inputs", "rllc_head_sweeps", "rllc_whole_model_sweep", "rllc_sweep_helper", "rllc_probe_table",
           "AblationInputs", "rllc_ablation_inputs", "rllc_icl_scores", "rllc_tokens_in_context"]

log = logging.getLogger(__name__)

# Behavioural essential dynamics (stagewise.essential_dynamics; [DL] §3.2 eq. 7): the outputs of
# every checkpoint on one fixed input set, a few thousand numbers per checkpoint
ED_NUM_SEQUENCES = 256  # regression: ŷ_k of 256 fixed sequences, K = 8 each (2,048 numbers)
ED_NUM_CONTEXTS = 32  # LM: log p(next token) in 32 fixed validation contexts...
ED_POSITION_STRIDE = 4  # ...at every 4th position (64 per context at n_ctx 256: 2,048 numbers)
ED_INPUT_SEED = 7


@dataclass(frozen=True)
class RegressionRunKey:
    """Everything that determines a regression training run (the cache key)."""

    task: RegressionTask
    model: RegressionTransformerConfig
    train: TrainConfig
    batch_size: int
    data_seed: int
    # the training loss's forward (stagewise.data.regression.regression_train_loss); "full" is left
    # out of the hash, so the keys of runs trained before this field existed stay valid
    train_loss: str = field(default="full", metadata=HASH_OMIT_DEFAULT)


def _regression_key(profile: RegressionProfile, seed: int) -> RegressionRunKey:
    from dataclasses import replace

    return RegressionRunKey(profile.task, profile.model, replace(profile.train, seed=seed), profile.batch_size, seed,
                            profile.train_loss)


def regression_run_directory(profile: RegressionProfile, seed: int) -> Path:
    """Where ``regression_run(profile, seed)`` keeps its run folder in the artifact cache (checkpoints,
    ``config.json``, ``resume.pt``), whether or not it is trained yet: to read a run still training."""
    from stagewise.cache import artifact_dir

    return artifact_dir("regression_runs", _regression_key(profile, seed))


def regression_run(profile: RegressionProfile, seed: int, progress: bool = True, device=None,
                   cuda_graph: bool | None = None) -> TrainedRun:
    """Train (or load) the ``profile``'s regression transformer with training seed ``seed``.

    The seed sets both the initialisation and the data stream, as in the paper's seeds 0-4.
    ``device``: where to train (None: a GPU if one is visible, else the CPU). ``cuda_graph``: replay
    each step as a CUDA graph (:func:`stagewise.train.train`; None: on a GPU, where it trained the
    `long` profile's 500k steps at 1,492 steps/s on one H200), not part of the key.

    A run trained here (in the cache) is always used. Otherwise, with ``profile.use_shipped_run``
    (the default), a run shipped in ``data/runs/`` for this key (:mod:`stagewise.shipped`; the
    `long` profile's 500k steps) is loaded into the cache instead of training, with a log line.
    ``use_shipped_run=False`` trains, and then compares the result with the shipped run
    (:func:`stagewise.shipped.check_against_manifest`: bit for bit on the same platform).
    """
    from stagewise import shipped

    key = _regression_key(profile, seed)
    model_fn = partial(RegressionTransformer, profile.model)
    if profile.use_shipped_run and not (regression_run_directory(profile, seed) / "done.json").exists():
        run = shipped.load_shipped("regression_runs", key, model_fn)
        if run is not None:
            return run
    run = train_cached(
        "regression_runs",
        key,
        model_fn=model_fn,
        loss_fn=regression_train_loss(key.train_loss),
        batch_fn=RegressionBatches(profile.task, profile.batch_size, seed),
        config=key.train,
        progress=progress,
        description=f"regression seed {seed}",
        device=device,
        cuda_graph=cuda_graph,
    )
    if not profile.use_shipped_run:
        from stagewise.hardware import resolve_device

        shipped.check_against_manifest(run, "regression_runs", key, device=str(resolve_device(device)))
    return run


def regression_llc(profile: RegressionProfile, seed: int, executor="serial", progress: bool = True, device=None):
    """λ̂(w_t) of ``regression_run(profile, seed)`` at the profile's analysis checkpoints.

    Same SGLD seed, noise and batches at every checkpoint (App. D.3.2); each checkpoint's estimate
    is cached, so an interrupted sweep resumes where it stopped. ``executor`` as in
    :func:`stagewise.llc.estimate_llc_sweep` (e.g. :func:`stagewise.cluster.sweep_executor`);
    ``device`` where the chains run (None: a GPU if one is visible); on a GPU the chains are
    vmapped and each step replayed as a CUDA graph (bit-identical to the eager step on an H200,
    10.5x faster at the `long` profile's setting: ``benchmarks/results/pilots/regression_gpu_500k.json``).
    Returns an ``LLCSweep``.
    """
    from stagewise.hardware import resolve_device

    from stagewise.llc import estimate_llc_sweep
    from stagewise.train import analysis_steps

    run = regression_run(profile, seed, progress=progress)
    steps = analysis_steps(run.checkpoint_steps, profile.num_analysis_checkpoints)
    return estimate_llc_sweep(
        [(int(s), run.checkpoint_path(s)) for s in steps],
        model_fn=partial(RegressionTransformer, profile.model),
        loss=regression_sgld_loss(profile.sgld_loss),
        data=sgld_dataset(profile.task, profile.num_sgld_samples),
        config=profile.sgld,
        compute_dtype=profile.sgld_dtype,
        cuda_graph=None,  # on a GPU each SGLD step is replayed as a CUDA graph: same numbers, ~10x faster here
        device=str(resolve_device(device)),
        executor=executor,
        progress=progress,
    )


def regression_sgld_calibration(profile: RegressionProfile, seed: int, sweep, boundaries=(), progress: bool = True,
                                device=None):
    """The SGLD calibration (App. D.3.3) of ``profile.sgld`` on ``regression_run(profile, seed)``:
    :func:`stagewise.llc.sgld_calibration` at the checkpoints :func:`stagewise.llc.calibration_checkpoints`
    picks from ``sweep`` (the seed's :func:`regression_llc`, whose estimates it reuses) and the
    detected ``boundaries``, with ``profile.sgld_calibration``'s grid. Every chain is cached."""
    from stagewise.hardware import resolve_device
    from stagewise.llc import calibration_checkpoints, sgld_calibration

    run = regression_run(profile, seed, progress=progress)
    settings = profile.sgld_calibration
    picks = calibration_checkpoints(sweep.steps, sweep.llc_mean, boundaries, settings.num_checkpoints)
    return sgld_calibration(
        "regression", picks, {s: run.checkpoint_path(s) for s in picks.values()},
        partial(RegressionTransformer, profile.model), regression_sgld_loss(profile.sgld_loss),
        sgld_dataset(profile.task, profile.num_sgld_samples), profile.sgld, settings, profile_sweep=sweep,
        compute_dtype=profile.sgld_dtype, cuda_graph=None, device=str(resolve_device(device)), progress=progress)


def regression_hessian(profile: RegressionProfile, hessian, seed: int, progress: bool = True, device="cpu"):
    """Hutchinson trace (± s.e.) and top Lanczos eigenvalue of ``regression_run(profile, seed)`` at
    ``hessian.num_checkpoints`` checkpoints, on one fixed batch of ``hessian.hessian_batch``
    sequences (App. C.2.2). The loss is the profile's LLC loss path (``profile.sgld_loss``; the
    predictions-only forward is the same function with ≈ 0.8x the matmul FLOPs), part of the cache
    key when it is not "full". Cached per checkpoint (resumable). Returns a DataFrame indexed by step.
    ``device``: where the Hessian-vector products run (not part of the key: another device gives
    the same statistics up to float rounding).
    """
    import pandas as pd
    import torch
    from stagewise.progress import tqdm

    from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact
    from stagewise.data.regression import sample_batch
    from stagewise.hessian import module_hessian_statistics
    from stagewise.train import analysis_steps

    run = regression_run(profile, seed, progress=progress)
    steps = analysis_steps(run.checkpoint_steps, hessian.num_checkpoints)
    b = sample_batch(profile.task, hessian.hessian_batch, torch.Generator().manual_seed(2024))
    base = {"run": config_to_dict(_regression_key(profile, seed)), "num_probes": hessian.num_probes, "tol": hessian.lanczos_tol,
            "batch": hessian.hessian_batch, **run_identity(run)}
    if profile.sgld_loss != "full":  # the full forward's entries keep their old keys
        base["loss"] = profile.sgld_loss
    loss = regression_sgld_loss(profile.sgld_loss)
    rows = []
    for step in tqdm(steps, desc="Hessian", disable=not progress):
        path = artifact_dir("hessian", {**base, "step": int(step)}) / "stats.pt"
        if path.exists():
            row = load_artifact(path)
        else:
            stats = module_hessian_statistics(run.load_model(step).to(device), loss,
                                              (b.tokens.to(device), b.ys.to(device)),
                                              num_probes=hessian.num_probes, chunk_size=10, tol=hessian.lanczos_tol,
                                              seed=0)
            row = {"step": int(step), "trace": stats.trace.mean, "trace_se": stats.trace.stderr,
                   "top_eig": stats.eigen.top, "converged": bool(stats.eigen.converged)}
            atomic_save(row, path)
        rows.append(row)
    return pd.DataFrame(rows).set_index("step")


@dataclass(frozen=True)
class LanguageRunKey:
    """Everything that determines a language-model training run (the cache key)."""

    model: object  # LanguageModelConfig
    train: TrainConfig
    batch_size: int
    data_seed: int
    corpus: object  # CorpusConfig
    tokenizer: str  # hash of the tokenizer files
    # the trained module (profile.train_model); left out of the hash at its default, so the keys of
    # runs trained before the option existed stay valid
    train_model: str = field(default="transformer_lens", metadata=HASH_OMIT_DEFAULT)
    # analogue data (profile.repeat_mix, profile.curriculum): hashed only when used
    repeat_mix: object = field(default=None, metadata=HASH_OMIT_DEFAULT)
    curriculum: object = field(default=None, metadata=HASH_OMIT_DEFAULT)


def _language_key(profile) -> LanguageRunKey:
    from stagewise.data.language import _tokenizer_hash

    return LanguageRunKey(profile.model, profile.train, profile.batch_size, profile.data_seed, profile.corpus,
                          _tokenizer_hash(), profile.train_model,
                          profile.repeat_mix if profile.repeat_mix.fraction else None, profile.curriculum)


def language_run(profile, progress: bool = True, device=None, train_missing: bool = True) -> TrainedRun | None:
    """Train (or load) the ``profile``'s attention-only language model (main paper §5, App. D.1).
    ``device``: where to train (None: a GPU if one is visible, else the CPU). ``train_missing=False``
    only loads: None unless the run has finished training (a helper process must never train beside
    the notebook that does)."""
    from stagewise.cache import artifact_dir
    from stagewise.data.language import LMBatches, load_contexts
    from stagewise.models.language import lm_loss, make_language_model

    key = _language_key(profile)
    if not train_missing and not (artifact_dir("language_runs", key) / "done.json").exists():
        return None
    contexts = load_contexts(profile.corpus, "train", profile.model.n_ctx)  # int32; LMBatches widens each batch
    if profile.train_model == "fast":
        from stagewise.models.language_fast import lm_fast_train_loss, make_trainable_fast_language_model

        model_fn, loss_fn = partial(make_trainable_fast_language_model, profile.model), lm_fast_train_loss
    else:
        model_fn, loss_fn = partial(make_language_model, profile.model), lm_loss
    batch_fn = LMBatches(contexts, profile.batch_size, profile.data_seed, repeat_mix=profile.repeat_mix)
    if profile.curriculum is not None:
        batch_fn = profile.curriculum.batches(profile.corpus, batch_fn, profile.tokens_per_step, profile.data_seed)
    run = train_cached(
        "language_runs",
        key,
        model_fn=model_fn,
        loss_fn=loss_fn,
        batch_fn=batch_fn,
        config=profile.train,
        progress=progress,
        description=f"{profile.model.n_layers}-layer LM",
        tokens_per_batch=profile.tokens_per_step,
        device=device,
    )
    run.model_fn = partial(make_language_model, profile.model)  # probes read hooks: load as HookedTransformer
    return run


PROBE_BATCH_SEED = 1  # seed of the fixed evaluation batch every probe checkpoint sees


def regression_probe_batch(profile: RegressionProfile):
    """The fixed evaluation batch of ``profile.num_eval`` sequences the App. C probes are run on."""
    import torch

    from stagewise.data.regression import sample_batch

    return sample_batch(profile.task, profile.num_eval, torch.Generator().manual_seed(PROBE_BATCH_SEED))


def regression_probes(profile: RegressionProfile, seed: int, num_checkpoints: int | None = None,
                      progress: bool = True):
    """The scalar probes of App. C (:func:`stagewise.probes.regression.scalar_probes`) of
    ``regression_run(profile, seed)`` at ``num_checkpoints`` checkpoints (default the profile's
    ``num_analysis_checkpoints``, spread evenly in log step), on :func:`regression_probe_batch`.

    Cached per checkpoint; the key includes the source of the probe modules, so editing a probe
    recomputes instead of serving stale numbers. Returns a DataFrame, one row per step (``step``
    column first), as :func:`~stagewise.probes.regression.probe_checkpoints`.
    """
    import hashlib
    import inspect

    import pandas as pd
    from stagewise.progress import tqdm

    from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact
    from stagewise.probes import regression as probes_mod
    from stagewise.probes import regression_behaviour, regression_structure
    from stagewise.train import analysis_steps

    num = profile.num_analysis_checkpoints if num_checkpoints is None else num_checkpoints
    run = regression_run(profile, seed, progress=progress)
    steps = analysis_steps(run.checkpoint_steps, num)
    batch = regression_probe_batch(profile)
    mean_task = probes_mod.task_prior_mean(profile.task) if profile.task.num_tasks is not None else None
    probes = probes_mod.scalar_probes(profile.task.noise_variance, mean_task=mean_task)
    source = hashlib.sha256("".join(inspect.getsource(m) for m in (probes_mod, regression_behaviour,
                                                                    regression_structure)).encode()).hexdigest()[:16]
    directory = artifact_dir("regression_probes", {"run": config_to_dict(_regression_key(profile, seed)),
                                                   "num_eval": profile.num_eval, "batch_seed": PROBE_BATCH_SEED,
                                                   "probe_source": source, **run_identity(run)})
    rows = []
    for step in tqdm(steps, desc=f"probes seed {seed}", disable=not progress):
        path = directory / f"step_{int(step):08d}.pt"
        if path.exists():
            row = load_artifact(path)
        else:
            row = {"step": int(step), **probes_mod.probe_checkpoint(run.load_model(int(step)), batch, probes)}
            atomic_save(row, path)
        rows.append(row)
    return pd.DataFrame(rows)


def language_analysis_steps(profile, run: TrainedRun):
    """The ``profile.num_analysis_checkpoints`` checkpoints of a language run, even in log(step)."""
    from stagewise.train import analysis_steps

    return analysis_steps(run.checkpoint_steps, profile.num_analysis_checkpoints)


def language_llc(profile, run: TrainedRun | None = None, steps=None, executor="serial", progress: bool = True,
                 device=None):
    """λ̂(w_t) of ``language_run(profile)`` at its analysis checkpoints (or ``steps``), main paper Fig. 1a.

    SGLD batches come from the corpus's held-out ``sgld`` split (App. D.1.4: a separate set of Pile
    lines), with the same seed (noise and batch order) at every checkpoint; each estimate is cached
    per checkpoint, so an interrupted sweep resumes. ``profile.sgld_stride`` > 1 uses the
    position-subsampled loss. ``executor`` and ``device`` as in :func:`regression_llc`; the chains
    are looped, not vmapped (on a GPU, 20 vmapped chains of the paper's LM would need ~650 GB).
    Returns an ``LLCSweep``.
    """
    from stagewise.data.language import load_contexts
    from stagewise.hardware import resolve_device
    from stagewise.llc import estimate_llc_sweep

    run = run or language_run(profile, progress=progress)
    steps = language_analysis_steps(profile, run) if steps is None else steps
    model_fn, loss = language_sgld_model(profile)
    return estimate_llc_sweep(
        [(int(s), run.checkpoint_path(s)) for s in steps],
        model_fn=model_fn,
        loss=loss,
        data=(language_sgld_contexts(profile),),
        config=profile.sgld,
        compute_dtype=profile.sgld_dtype,
        chain_mode="loop",
        device=str(resolve_device(device)),
        executor=executor,
        progress=progress,
    )


def language_sgld_calibration(profile, sweep, boundaries=(), run: TrainedRun | None = None, progress: bool = True,
                              device=None):
    """The SGLD calibration (App. D.3.3) of ``profile.sgld`` on ``language_run(profile)``, as
    :func:`regression_sgld_calibration`: checkpoints picked from ``sweep`` (the profile's
    :func:`language_llc`, whose estimates it reuses) and ``boundaries``, ``profile.sgld_calibration``'s
    grid, the chains looped like the sweep's. Every chain is cached."""
    from stagewise.hardware import resolve_device
    from stagewise.llc import calibration_checkpoints, sgld_calibration

    run = run or language_run(profile, progress=progress)
    settings = profile.sgld_calibration
    picks = calibration_checkpoints(sweep.steps, sweep.llc_mean, boundaries, settings.num_checkpoints)
    model_fn, loss = language_sgld_model(profile)
    return sgld_calibration(
        "LM", picks, {s: run.checkpoint_path(s) for s in picks.values()}, model_fn, loss,
        (language_sgld_contexts(profile),), profile.sgld, settings, profile_sweep=sweep,
        compute_dtype=profile.sgld_dtype, chain_mode="loop", device=str(resolve_device(device)), progress=progress)


SGLD_MIX_STEP = 0  # the RepeatMix 'step' that rewrites the SGLD contexts of an analogue profile (fixed)


def language_sgld_contexts(profile):
    """The contexts the LLC's SGLD draws its batches from: the corpus's held-out ``sgld`` split, with
    the profile's ``repeat_mix`` applied once (fixed) where it has one, so the LLC is measured on
    the distribution the model trains on after its curriculum."""
    from stagewise.data.language import load_contexts

    contexts = load_contexts(profile.corpus, "sgld", profile.model.n_ctx).long()
    return profile.repeat_mix.apply(contexts, SGLD_MIX_STEP) if profile.repeat_mix.fraction else contexts


def language_sgld_model(profile):
    """``(model_fn, loss)`` that the LLC sweeps of a language ``profile`` run: the profile's
    ``sgld_model`` ("fast": :class:`~stagewise.models.language_fast.FastAttentionOnlyLM`, the same
    function and weights as the HookedTransformer; "transformer_lens") with the loss at every
    ``sgld_stride``-th position. Both are part of every estimate's cache key."""
    from stagewise.models.language import lm_forward_loss, lm_forward_loss_subsampled, make_language_model
    from stagewise.models.language_fast import lm_fast_loss, make_fast_language_model

    if profile.sgld_model == "fast":
        loss = lm_fast_loss if profile.sgld_stride == 1 else partial(lm_fast_loss, stride=profile.sgld_stride)
        return partial(make_fast_language_model, profile.model), loss
    loss = lm_forward_loss if profile.sgld_stride == 1 else partial(lm_forward_loss_subsampled, stride=profile.sgld_stride)
    return partial(make_language_model, profile.model), loss


# --------------------------------------------------------------------------------------------
# Refined LLCs (notebook 04, [W]): the inputs and sweeps, shared with a helper process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RefinedInputs:
    """What notebook 04's LLC sweeps run on: the language ``run`` and its analysed ``steps`` (their
    ``checkpoints`` [(step, path)]), the SGLD ``data`` sets {'train': ..., domain: ...} (each a
    1-tuple of contexts), the LM's SGLD ``model_fn`` and ``loss``, and the ``head_domains`` whose
    per-head wdrLLC is computed."""

    run: TrainedRun
    steps: np.ndarray
    data: dict
    model_fn: object
    loss: object
    head_domains: tuple

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        return [(int(s), self.run.checkpoint_path(s)) for s in self.steps]


def rllc_inputs(cfg, progress: bool = True, train_missing: bool = True) -> RefinedInputs | None:
    """The inputs of the refined-LLC sweeps of ``cfg`` (a :class:`~stagewise.profiles.rllc.RefinedLLCProfile`):
    ``cfg.num_checkpoints`` of the language run's analysis checkpoints (initialisation excluded), even
    in log(step); the training distribution's held-out SGLD contexts and each of ``cfg.domains``
    (loaded offline, :func:`stagewise.data.domains.load_domain_contexts`). ``train_missing=False``:
    None while the language model has not finished training (:func:`language_run`)."""
    from stagewise.data.domains import load_domain_contexts
    from stagewise.profiles import get_profile
    from stagewise.train import analysis_steps

    lm = get_profile("language", cfg.language)
    run = language_run(lm, progress=progress, train_missing=train_missing)
    if run is None:
        return None
    steps = analysis_steps(language_analysis_steps(lm, run)[1:], cfg.num_checkpoints)
    data = {"train": (language_sgld_contexts(lm),)}
    for name, domain in zip(cfg.domain_names, cfg.domains):
        data[name] = (load_domain_contexts(domain, lm.model.n_ctx).long(),)
    model_fn, loss = language_sgld_model(lm)
    head_domains = tuple(cfg.head_domains if cfg.head_domains is not None else cfg.domain_names)
    return RefinedInputs(run, steps, data, model_fn, loss, head_domains)


def _maybe_reversed(items, reverse: bool) -> list:
    return list(items)[::-1] if reverse else list(items)


def rllc_head_sweeps(cfg, inputs: RefinedInputs, executor="serial", reverse: bool = False, progress: bool = True):
    """(wr, wdr): the per-head wrLLC on the training data (``cfg.sgld``) and wdrLLC on each head
    domain (nβ = ``cfg.data_refined_nbeta``) at every checkpoint (:func:`stagewise.refined.head_llc_sweep`,
    each estimate cached). ``reverse``: the same estimates in the opposite order (domains first,
    last head and checkpoint first), as a second process sharing the sweep runs them
    (:func:`rllc_sweep_helper`); the frames are the same up to row order."""
    import dataclasses

    from stagewise.profiles import get_profile
    from stagewise.refined import head_labels, head_llc_sweep

    lm = get_profile("language", cfg.language)
    heads = list(cfg.heads) if cfg.heads else head_labels(lm.model.n_layers, lm.model.n_heads)
    common = dict(heads=_maybe_reversed(heads, reverse), compute_dtype=lm.sgld_dtype, executor=executor,
                  progress=progress)
    checkpoints = _maybe_reversed(inputs.checkpoints, reverse)
    dr_cfg = dataclasses.replace(cfg.sgld, nbeta=cfg.data_refined_nbeta)
    domains = {k: inputs.data[k] for k in _maybe_reversed(inputs.head_domains, reverse)}

    def train():
        return head_llc_sweep(checkpoints, inputs.model_fn, inputs.loss, {"train": inputs.data["train"]}, cfg.sgld,
                              **common)

    def other():
        return head_llc_sweep(checkpoints, inputs.model_fn, inputs.loss, domains, dr_cfg, **common)

    if reverse:
        wdr = other()
        return train(), wdr
    wr = train()
    return wr, other()


def rllc_whole_model_sweep(cfg, inputs: RefinedInputs, executor="serial", reverse: bool = False,
                           progress: bool = True):
    """The whole-model (dr)LLC on every data set at every checkpoint, with the language profile's
    own SGLD settings (:func:`stagewise.refined.data_llc_sweep`; [W] Fig. 12). ``reverse`` as in
    :func:`rllc_head_sweeps`."""
    from stagewise.profiles import get_profile
    from stagewise.refined import data_llc_sweep

    lm = get_profile("language", cfg.language)
    data = {k: inputs.data[k] for k in _maybe_reversed(inputs.data, reverse)}
    return data_llc_sweep(_maybe_reversed(inputs.checkpoints, reverse), inputs.model_fn, inputs.loss, data, lm.sgld,
                          compute_dtype=lm.sgld_dtype, executor=executor, progress=progress)


def rllc_probe_table(cfg, inputs: RefinedInputs, progress: bool = True):
    """(validation contexts, probe table): notebook 01's probes (:func:`stagewise.probes.language.lm_probe_checkpoints`,
    rows cached per checkpoint, so notebook 01's are loaded) at the refined-LLC checkpoints."""
    from stagewise.data.language import load_contexts, load_token_stream
    from stagewise.probes.language import bigram_distribution, lm_probe_checkpoints, lm_probe_config
    from stagewise.profiles import get_profile

    lm = get_profile("language", cfg.language)
    val = load_contexts(lm.corpus, "validation", lm.model.n_ctx).long()
    bigrams = bigram_distribution(load_token_stream(lm.corpus, "train"), lm.model.d_vocab)
    table = lm_probe_checkpoints(inputs.run.load_model, inputs.steps, val, bigrams, lm_probe_config(lm.name),
                                 progress=progress)
    return val, table


@dataclass(frozen=True)
class AblationInputs:
    """What notebook 04's mean-ablation sections read ([W] Fig. 10, App. B): the ``pair`` of layer-1
    heads whose ICL score is taken alone (the two with the highest prefix-matching score at the final
    checkpoint), the ICL score's token positions ``k1`` < ``k2``, the ``reference`` contexts whose
    head outputs are the ablation means (training data), the validation contexts ``icl_tokens`` and
    ``tic_tokens`` the scores are taken on, every head's ``labels`` and the ``final`` step."""

    pair: list
    k1: int
    k2: int
    reference: object
    icl_tokens: object
    tic_tokens: object
    labels: list
    final: int


def rllc_ablation_inputs(cfg, inputs: RefinedInputs, val, probe_table) -> AblationInputs:
    """The :class:`AblationInputs` of ``cfg`` from the validation contexts and probe table of
    :func:`rllc_probe_table`."""
    from stagewise.data.language import load_contexts
    from stagewise.probes.language import head_scores_at, icl_tokens
    from stagewise.profiles import get_profile
    from stagewise.refined import head_labels

    lm = get_profile("language", cfg.language)
    final = int(inputs.steps[-1])
    scores = head_scores_at(probe_table, final)
    layer1 = scores[scores.index.str.startswith("1:")] if lm.model.n_layers > 1 else scores.iloc[:0]
    pair = list(layer1.sort_values("prefix_matching", ascending=False).index[:2])
    k1, k2 = icl_tokens(lm.model.n_ctx)
    reference = load_contexts(lm.corpus, "train", lm.model.n_ctx)[: cfg.ablation_contexts].long()
    return AblationInputs(pair=pair, k1=int(k1), k2=int(k2), reference=reference, icl_tokens=val[:256],
                          tic_tokens=val[: cfg.ablation_contexts],
                          labels=head_labels(lm.model.n_layers, lm.model.n_heads), final=final)


def rllc_icl_scores(inputs: RefinedInputs, ablation: AblationInputs, reverse: bool = False):
    """The ICL score of the model and of each head of ``ablation.pair`` with the other mean-ablated,
    at every checkpoint (:func:`stagewise.probes.ablation.cached_per_head_icl_scores`, cached): a
    frame indexed by step (ascending whatever ``reverse``, which only sets the order of computing)."""
    import pandas as pd

    from stagewise.probes.ablation import cached_per_head_icl_scores

    rows = []
    for s in _maybe_reversed(inputs.steps, reverse):
        model = inputs.run.load_model(int(s))
        rows.append({"step": int(s), **cached_per_head_icl_scores(model, ablation.icl_tokens, ablation.k1, ablation.k2,
                                                                  ablation.pair, reference=ablation.reference)})
    return pd.DataFrame(rows).set_index("step").sort_index()


def rllc_tokens_in_context(cfg, inputs: RefinedInputs, ablation: AblationInputs):
    """For every head, the ``cfg.tokens_in_context`` tokens whose loss rises most under its mean
    ablation at the final checkpoint (:func:`stagewise.probes.ablation.cached_tokens_in_context`, cached)."""
    from stagewise.probes.ablation import cached_tokens_in_context

    model = inputs.run.load_model(ablation.final)
    return cached_tokens_in_context(model, ablation.tic_tokens, ablation.labels, top_k=cfg.tokens_in_context,
                                    reference=ablation.reference)


HELPER_POLL_S = 10.0  # how often a helper looks for the language model it waits for


def rllc_sweep_helper(profile: str, progress: bool = False) -> None:
    """Notebook 04's LLC sweeps at ``profile``, in reverse order, for a second core: started beside
    the notebook (``stagewise-figures --jobs 2``, on a core no other notebook needs), it computes the
    estimates from the other end and writes each to the cache, where the notebook's serial sweep finds
    it (:mod:`stagewise.refined` looks in the cache again before each estimate). The notebook's
    numbers do not depend on which process computed an estimate: the same seed, data and weights.
    It never trains: while the language model is missing (the notebook training it) it waits.

    It starts with the mean-ablation scores (the ICL score per checkpoint, in reverse, and the tokens
    in context), which the notebook reaches only after its sweeps, so that they are cached by then."""
    import time

    from stagewise.profiles import get_profile

    cfg = get_profile("rllc", profile)
    while (inputs := rllc_inputs(cfg, progress=progress, train_missing=False)) is None:
        log.info("refined-LLC helper (%s): waiting for the language model to finish training", profile)
        time.sleep(HELPER_POLL_S)
    val, table = rllc_probe_table(cfg, inputs, progress=progress)
    ablation = rllc_ablation_inputs(cfg, inputs, val, table)
    rllc_icl_scores(inputs, ablation, reverse=True)
    rllc_tokens_in_context(cfg, inputs, ablation)
    rllc_head_sweeps(cfg, inputs, reverse=True, progress=progress)
    rllc_whole_model_sweep(cfg, inputs, reverse=True, progress=progress)


def _checkpoint_outputs(run: TrainedRun, kind: str, key: dict, fn, progress: bool, desc: str):
    """``fn(model)`` -> a numpy array at every checkpoint of ``run``, stacked [T, ...]; cached per run."""
    import numpy as np
    from stagewise.progress import tqdm

    from stagewise.cache import cached_value

    def compute():
        import torch

        with torch.no_grad():
            out = [fn(run.load_model(int(s))) for s in tqdm(run.checkpoint_steps, desc=desc, disable=not progress)]
        return {"steps": np.asarray(run.checkpoint_steps), "outputs": np.stack(out)}

    got = cached_value(kind, {**key, **run_identity(run), "version": 1}, compute)
    return got["steps"], got["outputs"]


def regression_outputs(profile: RegressionProfile, seed: int, num_sequences: int = ED_NUM_SEQUENCES,
                       progress: bool = True):
    """Behavioural ED's a_t of the regression run (``[DL]`` eq. 7): the predictions ŷ_k of every
    checkpoint on ``num_sequences`` fixed sequences (seed :data:`ED_INPUT_SEED`). Returns ``(steps
    [T], outputs [T, num_sequences, K])``, cached per run."""
    import torch

    from stagewise.cache import config_to_dict
    from stagewise.data.regression import sample_batch

    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    run = regression_run(profile, seed, progress=progress)
    batch = sample_batch(profile.task, num_sequences, torch.Generator().manual_seed(ED_INPUT_SEED))
    key = {"run": config_to_dict(_regression_key(profile, seed)), "num_sequences": num_sequences,
           "input_seed": ED_INPUT_SEED}
    return _checkpoint_outputs(run, "regression_outputs", key, lambda m: m.predict(batch.tokens).numpy(), progress,
                               f"outputs seed {seed}")


OFFSET_PROBE = {"num_sequences": 256, "length": 128, "segment": 20, "seed": 3}  # the random-offset repeat probe


def language_offset_drops(profile, run: TrainedRun, steps) -> np.ndarray:
    """The loss drop on a repeat at a random offset
    (:func:`stagewise.probes.language_structure.offset_repeat_losses`, settings :data:`OFFSET_PROBE`;
    the length capped at the model's context, the segment at (length - 3) // 2) of ``run``'s
    checkpoint at every step of ``steps``, cached per checkpoint."""
    from stagewise.cache import cached_value
    from stagewise.probes.language_structure import offset_repeat_losses

    length = min(OFFSET_PROBE["length"], profile.model.n_ctx)
    segment = min(OFFSET_PROBE["segment"], (length - 3) // 2)
    n, seed = OFFSET_PROBE["num_sequences"], OFFSET_PROBE["seed"]

    def drop(step: int) -> float:
        key = {"run": run.directory.name, "step": step, "num_sequences": n, "length": length, "segment": segment,
               "seed": seed}
        return cached_value("lm_offset_repeat", key, lambda: offset_repeat_losses(
            run.load_model(step), n, length=length, segment=segment, seed=seed)["drop"])

    return np.array([drop(int(s)) for s in steps], dtype=float)


def language_outputs(profile, num_contexts: int = ED_NUM_CONTEXTS, stride: int = ED_POSITION_STRIDE,
                     progress: bool = True):
    """Behavioural ED's a_t of the language run: log p(true next token) of every checkpoint in
    ``num_contexts`` fixed validation contexts (seed :data:`ED_INPUT_SEED`) at every ``stride``-th
    position (positions stride, 2 stride, ...). Returns ``(steps [T], outputs [T, num_contexts,
    positions])``, cached per run."""
    import torch

    from stagewise.cache import config_to_dict
    from stagewise.data.language import load_contexts
    from stagewise.probes.language_behaviour import position_losses

    n_ctx = profile.model.n_ctx
    if not isinstance(num_contexts, int) or num_contexts < 1:
        raise ValueError(f"num_contexts must be an integer >= 1, got {num_contexts!r}")
    if not isinstance(stride, int) or not 1 <= stride < n_ctx:
        raise ValueError(f"stride must be an integer in [1, n_ctx - 1 = {n_ctx - 1}], got {stride!r}")
    run = language_run(profile, progress=progress)
    val = load_contexts(profile.corpus, "validation", n_ctx)
    if num_contexts > len(val):
        raise ValueError(f"num_contexts={num_contexts} exceeds the {len(val)} validation contexts")
    pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(ED_INPUT_SEED))[:num_contexts]
    contexts = val[pick].long()
    columns = torch.arange(stride, n_ctx, stride) - 1  # loss at token k is column k - 1
    key = {"run": config_to_dict(_language_key(profile)), "num_contexts": num_contexts, "stride": stride,
           "input_seed": ED_INPUT_SEED}
    return _checkpoint_outputs(run, "language_outputs", key,
                               lambda m: -position_losses(m, contexts)[:, columns].numpy(), progress, "LM outputs")
