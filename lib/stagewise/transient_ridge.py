"""The transient ridge (Carroll et al., papers/icl-regression-...-code-session.txt §3-5).

One regression transformer per task diversity M ∈ ``profile.m_grid`` ∪ {∞}, trained on the nested
task prior q_M (the root task t_1 is shared by every T_M), then compared with the two ideal
predictors of :mod:`stagewise.ridge`:

* :func:`train_runs` — the runs (cached, resumable; serially or on the LLC sweeps' executors);
* :func:`run_outputs` — every checkpoint's predictions ŷ_k on three fixed test sets: q_∞ (the OOD
  loss of Fig. 1 top left), q_M (in-distribution loss and the function-space distances Δ of Fig. 1
  bottom left) and q(S | t_1) (the B sequences of the joint trajectory PCA, Fig. 1 right), cached;
* :func:`behaviour_curves` — OOD loss, loss on q_M and Δ(f, dMMSE_M), Δ(f, ridge) over training;
* :func:`transience_summary` — t_crit (step of minimal OOD loss), how far the OOD loss dips toward
  ridge and climbs back toward dMMSE_M, and which predictor the fully trained model is nearer to;
* :func:`joint_trajectory_pca` — PCA of the stacked q(S | t_1) outputs of all runs (§4.2);
* :func:`final_llcs` — λ̂ of every fully trained model on its own q_M (eq. 9, Fig. 3 bottom);
* :func:`free_energy_crossing` — the sample size where eq. (8) flips from ridge to dMMSE_M.

Function-space distance (our normalisation; the paper's App. B is not in our copy):
Δ(f, g) = mean over sequences and k of (f(S≤k) − g(S≤k))², on a fixed q_M test set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd
import torch

from stagewise.cache import artifact_dir, atomic_save, config_to_dict, load_artifact
from stagewise.data.regression import (RegressionBatch, RegressionBatches, RegressionTask, regression_sgld_loss,
                                       regression_train_loss, sample_batch, sgld_dataset, task_set)
from stagewise.essential_dynamics import TrajectoryPCA, fit_pca, smooth_trajectory
from stagewise.hardware import available_cores
from stagewise.models.regression import RegressionTransformer
from stagewise.profiles.ridge import TransientRidgeProfile
from stagewise.progress import tqdm
from stagewise.ridge import dmmse_predict, ridge_predict
from stagewise.runs import RegressionRunKey
from stagewise.train import TrainedRun, train_cached

__all__ = [
    "run_task", "transient_ridge_run", "train_runs", "ood_batch", "root_batch", "in_distribution_batch",
    "RunOutputs", "run_outputs", "ideal_predictions", "function_distance", "behaviour_curves", "critical_step",
    "transience_summary", "task_diversity_threshold", "joint_trajectory_pca", "final_llcs", "llc_crossing",
    "free_energy_difference", "free_energy_crossing", "m_label",
]

log = logging.getLogger(__name__)

# Seeds of the fixed test sets; distinct from every training stream (RegressionBatches mixes its own).
OOD_SEED, ROOT_SEED, IN_DIST_SEED = 999, 1001, 1000


def m_label(M: int | None) -> str:
    """'∞' for M = None, else the number."""
    return "∞" if M is None else str(M)


def _check_m(M: int | None) -> None:
    if M is not None and (isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1):
        raise ValueError(f"task diversity M must be an integer >= 1 or None (M = ∞), got {M!r}")


def run_task(profile: TransientRidgeProfile, M: int | None) -> RegressionTask:
    """The task prior q_M of the run with task diversity ``M`` (None = ∞: t ~ N(0, I_D))."""
    _check_m(M)
    return replace(profile.task, num_tasks=None if M is None else int(M))


def _run_key(profile: TransientRidgeProfile, M: int | None) -> RegressionRunKey:
    return RegressionRunKey(run_task(profile, M), profile.model, replace(profile.train, seed=profile.seed),
                            profile.batch_size, profile.seed, profile.train_loss)


def transient_ridge_run(profile: TransientRidgeProfile, M: int | None, progress: bool = True, device=None,
                        cuda_graph: bool | None = None) -> TrainedRun:
    """Train (or load, or resume) the run with task diversity ``M`` (cached by the full config).

    ``device`` and ``cuda_graph`` as in :func:`stagewise.runs.regression_run` (None: a GPU if one
    is visible, each step replayed as a CUDA graph there); neither is part of the key."""
    key = _run_key(profile, M)
    return train_cached(
        "transient_ridge_runs", key,
        model_fn=partial(RegressionTransformer, profile.model),
        loss_fn=regression_train_loss(key.train_loss),
        batch_fn=RegressionBatches(key.task, profile.batch_size, profile.seed),
        config=key.train, progress=progress, description=f"M = {m_label(M)}",
        device=device, cuda_graph=cuda_graph,
    )


def _train_worker(payload: dict) -> int | None:
    """Worker entry point (top level, so it pickles): train one run, then write its cached
    :func:`run_outputs` and final LLC (:func:`final_llcs`) so that these run in parallel too and the
    notebook's serial calls only load them; return its M."""
    if payload.get("threads"):
        torch.set_num_threads(payload["threads"])
    profile, M = payload["profile"], payload["M"]
    run = transient_ridge_run(profile, M, progress=False)
    run_outputs(profile, M, progress=False)
    _final_llc_row(profile, M, run, executor="serial")
    return M


def train_runs(profile: TransientRidgeProfile, executor="serial", max_workers: int | None = None,
               progress: bool = True) -> dict[int | None, TrainedRun]:
    """Every run of ``profile.task_diversities``, {M: TrainedRun} (None = ∞).

    ``executor`` as in :func:`stagewise.llc.estimate_llc_sweep`: "serial", "processes" (local
    spawned workers, torch threads split between them), a ``dask.distributed.Client`` or any
    ``concurrent.futures.Executor``. Workers write the cache (the run, then its :func:`run_outputs`
    and final LLC, which the notebook's later serial calls load); finished runs are only loaded.
    """
    from stagewise.llc.sweep import _make_executor

    todo = [M for M in profile.task_diversities
            if not (artifact_dir("transient_ridge_runs", _run_key(profile, M)) / "done.json").exists()]
    pool, owned, wait = _make_executor(executor, max_workers)
    if pool is not None and todo:
        threads = max(1, available_cores() // (max_workers or available_cores())) if executor == "processes" else None
        bar = tqdm(total=len(todo), desc="training runs", disable=not progress)
        try:
            for fut in wait([pool.submit(_train_worker, {"profile": profile, "M": M, "threads": threads}) for M in todo]):
                log.info("trained M = %s", m_label(fut.result()))
                bar.update()
        finally:
            bar.close()
            if owned:
                pool.shutdown(cancel_futures=True)
    return {M: transient_ridge_run(profile, M, progress=progress) for M in profile.task_diversities}


# ------------------------------------------------------------------------------------------------
# Fixed test sets and every checkpoint's predictions on them


def ood_batch(profile: TransientRidgeProfile) -> RegressionBatch:
    """The fixed OOD test set D^(∞) ~ q_∞(S) shared by every run (Fig. 1 top left)."""
    return sample_batch(run_task(profile, None), profile.num_eval, torch.Generator().manual_seed(OOD_SEED))


def root_batch(profile: TransientRidgeProfile) -> RegressionBatch:
    """The B = ``pca_batch`` sequences D^(1) ~ q(S | t_1) of the joint trajectory PCA (§4.2)."""
    task = run_task(profile, 1)
    return sample_batch(task, profile.pca_batch, torch.Generator().manual_seed(ROOT_SEED), tasks=task_set(task))


def in_distribution_batch(profile: TransientRidgeProfile, M: int | None) -> RegressionBatch:
    """A fixed test set from the run's own q_M (for M = ∞ this is a second q_∞ sample)."""
    return sample_batch(run_task(profile, M), profile.num_eval, torch.Generator().manual_seed(IN_DIST_SEED))


@dataclass(frozen=True)
class RunOutputs:
    """Predictions ŷ [n_checkpoints, n_sequences, K] of one run at every checkpoint."""

    M: int | None
    steps: np.ndarray
    ood: np.ndarray  # on ood_batch
    in_dist: np.ndarray  # on in_distribution_batch(M)
    root: np.ndarray  # on root_batch


def _predict(model: torch.nn.Module, batch: RegressionBatch, chunk: int = 1024) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model.predict(batch.tokens[i:i + chunk]) for i in range(0, len(batch.ys), chunk)]).numpy()


def run_outputs(profile: TransientRidgeProfile, M: int | None, progress: bool = True) -> RunOutputs:
    """:class:`RunOutputs` of the run with task diversity ``M`` (trains it if needed); cached."""
    run = transient_ridge_run(profile, M, progress=progress)
    key = {"run": config_to_dict(_run_key(profile, M)), "num_eval": profile.num_eval, "pca_batch": profile.pca_batch,
           "seeds": [OOD_SEED, IN_DIST_SEED, ROOT_SEED]}
    path = artifact_dir("transient_ridge_outputs", key) / "outputs.pt"
    if not path.exists():
        batches = {"ood": ood_batch(profile), "in_dist": in_distribution_batch(profile, M), "root": root_batch(profile)}
        preds = {name: [] for name in batches}
        for step in tqdm(run.checkpoint_steps, desc=f"outputs M = {m_label(M)}", disable=not progress, leave=False):
            model = run.load_model(int(step))
            for name, batch in batches.items():
                preds[name].append(_predict(model, batch))
        atomic_save({"steps": run.checkpoint_steps, **{k: np.stack(v) for k, v in preds.items()}}, path)
    out = load_artifact(path)
    return RunOutputs(M, np.asarray(out["steps"]), out["ood"], out["in_dist"], out["root"])


def ideal_predictions(profile: TransientRidgeProfile, M: int | None, batch: RegressionBatch) -> dict[str, np.ndarray]:
    """{"dmmse": dMMSE_M, "ridge": ridge} predictions [n, K] on ``batch`` (eqs. 4-5).

    For M = ∞, dMMSE_∞ is ridge. Raises if the batch's D differs from the profile's.
    """
    D = profile.task.task_size
    if batch.xs.shape[-1] != D or batch.xs.shape[1] != profile.task.max_examples:
        raise ValueError(f"batch has (K, D) = {tuple(batch.xs.shape[1:])}, the profile has "
                         f"(K, D) = ({profile.task.max_examples}, {D})")
    sigma2 = profile.task.noise_variance
    ridge = ridge_predict(batch.xs.double(), batch.ys.double(), sigma2).numpy()
    if M is None:
        return {"dmmse": ridge, "ridge": ridge}
    tasks = task_set(run_task(profile, M)).double()
    return {"dmmse": dmmse_predict(batch.xs.double(), batch.ys.double(), tasks, sigma2).numpy(), "ridge": ridge}


def function_distance(predictions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Δ(f, g) = mean over sequences and k of (f − g)², per checkpoint: [T, n, K] vs [n, K] -> [T]."""
    predictions, reference = np.asarray(predictions), np.asarray(reference)
    if predictions.shape[-2:] != reference.shape:
        raise ValueError(f"predictions {predictions.shape} and reference {reference.shape} must share [n, K]")
    return ((predictions - reference) ** 2).mean(axis=(-2, -1))


def _mse(predictions: np.ndarray, ys: torch.Tensor) -> np.ndarray:
    return function_distance(predictions, ys.double().numpy())


# ------------------------------------------------------------------------------------------------
# Behaviour over training, t_crit, transience and the task-diversity threshold


def behaviour_curves(profile: TransientRidgeProfile, outputs: dict[int | None, RunOutputs]) -> pd.DataFrame:
    """One row per (M, checkpoint): ``ood_loss`` on q_∞, ``in_loss`` on q_M, ``dist_dmmse`` =
    Δ(f, dMMSE_M) and ``dist_ridge`` = Δ(f, ridge) on q_M; plus each run's ideal-predictor losses
    (``dmmse_ood``, ``ridge_ood``, ``dmmse_in``, ``ridge_in``) and the zero predictor's ``zero_ood``."""
    ood = ood_batch(profile)
    ridge_ood = ideal_predictions(profile, None, ood)["ridge"]
    frames = []
    for M, out in outputs.items():
        ind = in_distribution_batch(profile, M)
        ideal_in = ideal_predictions(profile, M, ind)
        dmmse_ood = ideal_predictions(profile, M, ood)["dmmse"]
        frames.append(pd.DataFrame({
            "M": m_label(M), "m": math.inf if M is None else M, "step": out.steps,
            "ood_loss": _mse(out.ood, ood.ys), "in_loss": _mse(out.in_dist, ind.ys),
            "dist_dmmse": function_distance(out.in_dist, ideal_in["dmmse"]),
            "dist_ridge": function_distance(out.in_dist, ideal_in["ridge"]),
            "dmmse_ood": float(_mse(dmmse_ood, ood.ys)), "ridge_ood": float(_mse(ridge_ood, ood.ys)),
            "dmmse_in": float(_mse(ideal_in["dmmse"], ind.ys)), "ridge_in": float(_mse(ideal_in["ridge"], ind.ys)),
            "zero_ood": float((ood.ys.double() ** 2).mean()),
        }))
    return pd.concat(frames, ignore_index=True)


def critical_step(steps, ood_loss, smoothing: float = 0.0) -> int:
    """t_crit: the checkpoint step at which the (Gaussian-smoothed, ``smoothing`` checkpoints wide)
    OOD loss is smallest (§4.3, App. B.2)."""
    steps, ood_loss = np.asarray(steps), np.asarray(ood_loss, dtype=float)
    if steps.shape != ood_loss.shape or steps.ndim != 1 or len(steps) == 0:
        raise ValueError(f"steps and ood_loss must be 1-D of equal non-zero length, got {steps.shape}, {ood_loss.shape}")
    if not np.all(np.isfinite(ood_loss)):
        raise ValueError("ood_loss contains NaN/inf")
    return int(steps[np.argmin(smooth_trajectory(ood_loss, sigma=smoothing))])


def transience_summary(curves: pd.DataFrame, smoothing: float = 0.0, dip: float = 0.25, rise: float = 0.1,
                       partial: float = 0.05) -> pd.DataFrame:
    """Per M: t_crit and the shape of the OOD loss curve against the two ideal predictors.

    * ``dip`` = (ℓ_ref − ℓ_min) / (ℓ_ref − ℓ_ridge) with ℓ_ref = min(ℓ_zero, ℓ_dMMSE): how far the
      minimum OOD loss gets toward ridge's from the better of the two solutions without in-context
      regression, the zero predictor and dMMSE_M (1 = reaches ridge, ≤ 0 = never better than them);
    * ``rise`` = (ℓ_final − ℓ_min) / (ℓ_dMMSE − ℓ_ridge): how far it then climbs back, in units of
      the OOD gap between dMMSE_M and ridge (1 = a full climb from ridge to dMMSE_M);
    * ``nearer`` = Δ(f, dMMSE_M) / (Δ(f, dMMSE_M) + Δ(f, ridge)) of the fully trained model:
      0 = dMMSE_M, 1 = ridge (in distribution, on q_M);
    * ``transient`` when dip ≥ ``dip`` and rise ≥ ``rise``; ``partial`` when both are ≥ ``partial``
      but not both above their thresholds (the paper's "partial dip" / "partial rise").
    The default thresholds are ours (the paper names no numbers): a model that cannot reach ridge
    itself (small models, short runs) cannot dip all the way, so a quarter of the way counts; a rise
    of a tenth of the gap is several times the checkpoint-to-checkpoint noise of a run that has no
    rise at all (compare the ``rise`` of the runs past the threshold, which go to ridge and stay).
    All losses are lightly smoothed over checkpoints first (``smoothing``, as the paper's figures).
    """
    rows = []
    for M, g in curves.groupby("M", sort=False):
        loss = smooth_trajectory(g["ood_loss"].to_numpy(), sigma=smoothing)
        i = int(np.argmin(loss))
        first = g.iloc[0]
        gap = first["dmmse_ood"] - first["ridge_ood"]
        last = g.iloc[-1]
        # M = ∞: dMMSE_∞ is ridge, so the zero predictor is the only reference
        ref = min(first["zero_ood"], first["dmmse_ood"]) if gap > 0 else first["zero_ood"]
        d_dip = (ref - loss[i]) / (ref - first["ridge_ood"]) if ref > first["ridge_ood"] else 0.0
        d_rise = (loss[-1] - loss[i]) / gap if gap > 0 else 0.0
        nearer = last["dist_dmmse"] / (last["dist_dmmse"] + last["dist_ridge"]) if M != "∞" else math.nan
        rows.append({"M": M, "m": first["m"], "t_crit": int(g["step"].iloc[i]), "ood_min": loss[i], "ood_final": loss[-1],
                     "ridge_ood": first["ridge_ood"], "dmmse_ood": first["dmmse_ood"], "dip": d_dip, "rise": d_rise,
                     "final_in_loss": last["in_loss"], "dmmse_in": first["dmmse_in"], "ridge_in": first["ridge_in"],
                     "dist_dmmse": last["dist_dmmse"], "dist_ridge": last["dist_ridge"], "nearer": nearer,
                     "transient": bool(d_dip >= dip and d_rise >= rise),
                     "partial": bool(d_dip >= partial and d_rise >= partial and not (d_dip >= dip and d_rise >= rise))})
    return pd.DataFrame(rows).set_index("M")


def task_diversity_threshold(summary: pd.DataFrame) -> dict:
    """Where fully trained models switch from dMMSE_M to ridge (in distribution).

    ``last_dmmse``: the largest M whose model is nearer dMMSE_M (``nearer`` < 1/2) below the first M
    from which every larger finite M is nearer ridge (``first_ridge``); ``threshold``: the M at which
    ``nearer`` crosses 1/2, interpolated linearly in log M between those two (None if no crossing).
    """
    fin = summary[np.isfinite(summary["m"])].sort_values("m")
    m, nearer = fin["m"].to_numpy(), fin["nearer"].to_numpy()
    ridge_side = nearer >= 0.5
    if not ridge_side.any():
        return {"last_dmmse": int(m[-1]), "first_ridge": None, "threshold": None}
    # first index from which all models are ridge-like
    k = len(m) - int(np.argmin(ridge_side[::-1])) if not ridge_side.all() else 0
    if k == 0:
        return {"last_dmmse": None, "first_ridge": int(m[0]), "threshold": None}
    lo, hi = k - 1, k
    f = (0.5 - nearer[lo]) / (nearer[hi] - nearer[lo])
    threshold = float(np.exp(np.log(m[lo]) + f * (np.log(m[hi]) - np.log(m[lo]))))
    return {"last_dmmse": int(m[lo]), "first_ridge": int(m[hi]), "threshold": threshold}


# ------------------------------------------------------------------------------------------------
# Joint trajectory PCA (§4.2)


def joint_trajectory_pca(outputs: dict[int | None, RunOutputs], n_components: int = 4) -> TrajectoryPCA:
    """PCA of F_ℳ: every checkpoint of every run as one row f(D^(1), w_t^M) ∈ ℝ^{BK} (outputs on the
    q(S | t_1) sequences), stacked over runs, centred, SVD. Ideal predictors are *not* in the fit;
    place them with ``pca.project``."""
    return fit_pca([out.root for out in outputs.values()], n_components=n_components)


# ------------------------------------------------------------------------------------------------
# LLC of fully trained models and the free-energy trade-off (§5)


def final_llcs(profile: TransientRidgeProfile, runs: dict[int | None, TrainedRun], executor="serial",
               progress: bool = True) -> pd.DataFrame:
    """λ̂(w*_M) of each fully trained model on SGLD data from its own q_M (eq. 9), cached.

    Returns one row per M: ``llc_mean``, ``llc_sem``, ``loss_init``, the flagged chains' ``flags``,
    and the estimate's ``drift`` and ``unconverged`` (:func:`stagewise.llc.estimate_convergence`).
    """
    rows = [_final_llc_row(profile, M, run, executor)
            for M, run in tqdm(runs.items(), desc="LLC of trained models", disable=not progress)]
    return pd.DataFrame(rows).set_index("M")


def _final_llc_row(profile: TransientRidgeProfile, M: int | None, run: TrainedRun, executor="serial") -> dict:
    """:func:`final_llcs`' row of one run (the sweep's cache makes a second call a load)."""
    from stagewise.hardware import resolve_device
    from stagewise.llc import estimate_llc_sweep

    final = int(run.checkpoint_steps[-1])
    sweep = estimate_llc_sweep(
        [(final, run.checkpoint_path(final))], model_fn=partial(RegressionTransformer, profile.model),
        loss=regression_sgld_loss(profile.sgld_loss),
        data=partial(sgld_dataset, run_task(profile, M), profile.num_sgld_samples),
        config=profile.sgld, compute_dtype=profile.sgld_dtype, executor=executor, progress=False,
        device=str(resolve_device(None)), cuda_graph=None)
    r = sweep.to_frame().iloc[0]
    return {"M": m_label(M), "m": math.inf if M is None else M, "llc_mean": r["llc_mean"],
            "llc_sem": r["llc_sem"], "loss_init": r["loss_init"], "flags": r["flags"],
            "drift": r["drift"], "unconverged": bool(r["unconverged"])}


def final_llc_calibration(profile: TransientRidgeProfile, runs: dict[int | None, TrainedRun], llc: pd.DataFrame,
                          progress: bool = True) -> dict:
    """The SGLD calibration (App. D.3.3, :func:`stagewise.llc.sgld_calibration`) of ``profile.sgld``
    at two representative fully trained models: M = ∞ (ridge, the reference LLC) and the finite M
    of the largest λ̂ in ``llc`` (:func:`final_llcs`), each on its own q_M, with
    ``profile.sgld_calibration``'s grid. Returns {M label: SGLDCalibration}; every chain is cached."""
    from stagewise.hardware import resolve_device
    from stagewise.llc import sgld_calibration

    finite = llc[np.isfinite(llc["m"].astype(float)) & np.isfinite(llc["llc_mean"].astype(float))]
    labels = ["∞"] + ([str(finite["llc_mean"].astype(float).idxmax())] if len(finite) else [])
    by_label = {m_label(M): M for M in runs}
    out = {}
    for label in labels:
        M = by_label[label]
        run = runs[M]
        final = int(run.checkpoint_steps[-1])
        out[label] = sgld_calibration(
            f"ridge M = {label}", {"final": final}, {final: run.checkpoint_path(final)},
            partial(RegressionTransformer, profile.model), regression_sgld_loss(profile.sgld_loss),
            partial(sgld_dataset, run_task(profile, M), profile.num_sgld_samples), profile.sgld,
            profile.sgld_calibration, compute_dtype=profile.sgld_dtype, device=str(resolve_device(None)),
            cuda_graph=None, progress=progress)
    return out


def llc_crossing(m, llc, llc_ridge: float) -> float | None:
    """The smallest task diversity at which λ̂(M) reaches the ridge LLC, interpolated linearly in
    log M between the grid points around the first crossing (None if λ̂ stays below)."""
    m, llc = np.asarray(m, dtype=float), np.asarray(llc, dtype=float)
    if m.shape != llc.shape or m.ndim != 1 or np.any(m <= 0) or np.any(np.diff(m) <= 0):
        raise ValueError("m must be increasing positive task diversities with one llc each")
    above = np.flatnonzero(llc >= llc_ridge)
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(m[0])
    f = (llc_ridge - llc[i - 1]) / (llc[i] - llc[i - 1])
    return float(np.exp(np.log(m[i - 1]) + f * (np.log(m[i]) - np.log(m[i - 1]))))


def free_energy_difference(n, delta_loss: float, delta_llc: float) -> np.ndarray:
    """F_n(ridge) − F_n(dMMSE_M) ≈ n Δℓ − Δλ log n (eqs. 7-8, lower-order terms dropped), with
    Δℓ = ℓ(ridge) − ℓ(dMMSE_M) and Δλ = λ(dMMSE_M) − λ(ridge). Positive: the posterior prefers dMMSE_M."""
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0):
        raise ValueError("sample sizes n must be > 0")
    return n * delta_loss - delta_llc * np.log(n)


def free_energy_crossing(delta_loss: float, delta_llc: float) -> float:
    """The n > e at which n Δℓ = Δλ log n, i.e. where the Bayesian posterior switches from the simple
    ridge solution to the accurate dMMSE_M one (§5.2: log n / n = Δℓ / Δλ).

    Δℓ ≤ 0: dMMSE_M never wins (inf). Δλ ≤ 0: it wins from the start (1.0). Otherwise the larger
    root, n* = −(Δλ/Δℓ) W_{−1}(−Δℓ/Δλ) (Lambert W); if Δℓ/Δλ > 1/e the curves never cross and
    dMMSE_M is preferred for every n (1.0).
    """
    from scipy.special import lambertw

    if not (math.isfinite(delta_loss) and math.isfinite(delta_llc)):
        raise ValueError(f"delta_loss and delta_llc must be finite, got {delta_loss}, {delta_llc}")
    if delta_loss <= 0:
        return math.inf
    if delta_llc <= 0:
        return 1.0
    ratio = delta_loss / delta_llc
    if ratio > 1 / math.e:
        return 1.0
    return float((-lambertw(-ratio, -1) / ratio).real)
