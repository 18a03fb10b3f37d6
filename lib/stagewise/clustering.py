"""Clustering per-head rLLC curves ([W] App. F.5).

The paper clusters each head's curve over training — the per-head training-data drLLC and code
drLLC concatenated, a 2T-dimensional vector — with Euclidean K-means, DTW K-means, hierarchical
(Ward) clustering and a shape-based K-means (the shape-based distance SBD of Paparrizos &
Gravano), for c = 2-4 clusters per layer, and reports silhouette, Calinski–Harabasz and
Davies–Bouldin scores (F.5.2), noting that with 8 heads per layer they are unreliable.

Methods here (:data:`METHODS`):

* ``"kmeans"`` — Euclidean K-means on the raw curves (sklearn, ``n_init=50``, seeded);
* ``"ward"`` — agglomerative clustering with Ward's minimum-variance linkage (sklearn);
* ``"shape"`` — K-means under the **correlation distance of z-normalised curves**,
  ``d(x, y) = 1 − corr(x, y)`` (SBD of Paparrizos & Gravano with no time shift). On curves
  z-normalised to mean 0 and standard deviation 1, ``‖x̂ − ŷ‖² = 2T (1 − corr(x, y))``, so
  Euclidean K-means on the z-normalised curves is exactly K-means under this distance. Scale and
  offset are removed; time is not warped. We chose no shift (unlike SBD's cross-correlation over
  shifts, or DTW) on purpose: the checkpoints are aligned in training time, and *when* a head's
  curve turns is part of its type (the paper's two induction heads differ mainly by a
  thousands-of-steps offset, Fig. 10), which a shift- or warp-invariant distance would erase.
  ``segments`` z-normalises each block of a concatenated curve separately (e.g. the training-data
  and code halves), so each block's shape counts equally.

Scores are computed in the space the method clusters in (raw curves for kmeans/ward, z-normalised
curves for shape), so the silhouette of ``"shape"`` is the silhouette under correlation distance.
Cluster labels are canonical: numbered in order of first appearance over the rows, so equal
partitions give equal label vectors.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METHODS",
    "znormalise",
    "correlation_distance",
    "cluster_curves",
    "clustering_scores",
    "cluster_table",
    "curve_matrix",
    "chain_split_clusters",
]

METHODS = ("kmeans", "ward", "shape")


def _as_matrix(curves) -> np.ndarray:
    x = np.asarray(curves, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"curves must have shape [n_curves >= 2, n_points >= 2], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("curves contain NaN or inf (a flagged LLC estimate?); drop or fill them first")
    return x


def _check_segments(segments: Sequence[int] | None, width: int) -> list[int]:
    if segments is None:
        return [width]
    segments = [int(s) for s in segments]
    if any(s < 2 for s in segments) or sum(segments) != width:
        raise ValueError(f"segments must be lengths >= 2 adding up to the curve length {width}, got {segments}")
    return segments


def znormalise(curves, segments: Sequence[int] | None = None) -> np.ndarray:
    """Each curve (each block of ``segments`` lengths, if given) shifted to mean 0 and scaled to
    standard deviation 1. A constant block has no shape and raises ValueError."""
    x = _as_matrix(curves)
    out, start = np.empty_like(x), 0
    for length in _check_segments(segments, x.shape[1]):
        block = x[:, start:start + length]
        std = block.std(axis=1, keepdims=True)
        if (std <= 1e-12 * np.maximum(1.0, np.abs(block).max(axis=1, keepdims=True))).any():
            rows = np.flatnonzero(std[:, 0] <= 1e-12 * np.maximum(1.0, np.abs(block).max(axis=1)))
            raise ValueError(f"curves {rows.tolist()} are constant on points {start}-{start + length - 1}: "
                             "a constant curve has no shape to compare")
        out[:, start:start + length] = (block - block.mean(axis=1, keepdims=True)) / std
        start += length
    return out


def correlation_distance(curves, segments: Sequence[int] | None = None) -> np.ndarray:
    """Pairwise ``1 − corr`` of the (z-normalised) curves, shape [n, n], in [0, 2] (0: same shape).

    With ``segments``, the mean over blocks of each block's correlation distance.
    """
    z = znormalise(curves, segments)
    lengths = _check_segments(segments, z.shape[1])
    out, start = np.zeros((z.shape[0], z.shape[0])), 0
    for n in lengths:  # ‖x̂ − ŷ‖² = 2n (1 − corr) per block of n points
        block = z[:, start:start + n]
        out += ((block[:, None, :] - block[None, :, :]) ** 2).sum(-1) / (2.0 * n)
        start += n
    return out / len(lengths)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of first appearance."""
    mapping: dict[int, int] = {}
    return np.array([mapping.setdefault(int(v), len(mapping)) for v in labels], dtype=np.int64)


def _features(curves, method: str, segments) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "shape":
        # scale so that squared Euclidean distance = sum over blocks of (1 - corr): blocks weigh equally
        z = znormalise(curves, segments)
        lengths = _check_segments(segments, z.shape[1])
        weights = np.concatenate([np.full(n, 1.0 / np.sqrt(2.0 * n)) for n in lengths])
        return z * weights
    return _as_matrix(curves)


def cluster_curves(curves, n_clusters: int, method: str = "kmeans", seed: int = 0,
                   segments: Sequence[int] | None = None) -> np.ndarray:
    """Cluster labels (canonical, see module doc) of the rows of ``curves`` [n_curves, n_points].

    ``method`` in :data:`METHODS`; ``seed`` fixes K-means' initialisations (same seed, same labels);
    ``segments`` (block lengths adding up to n_points) only matters for ``"shape"``.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans

    x = _features(curves, method, segments)
    if not isinstance(n_clusters, (int, np.integer)) or not 2 <= n_clusters <= x.shape[0] - 1:
        raise ValueError(f"n_clusters must be an integer in [2, {x.shape[0] - 1}] for {x.shape[0]} curves, "
                         f"got {n_clusters!r}")
    if method == "ward":
        labels = AgglomerativeClustering(n_clusters=int(n_clusters), linkage="ward").fit_predict(x)
    else:
        labels = KMeans(n_clusters=int(n_clusters), n_init=50, random_state=seed).fit_predict(x)
    return _canonical(labels)


def clustering_scores(curves, labels, method: str = "kmeans", segments: Sequence[int] | None = None) -> dict:
    """Silhouette (higher better, in [−1, 1]), Calinski–Harabasz (higher better) and
    Davies–Bouldin (lower better) of ``labels`` in the method's space (App. F.5.2)."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    x = _features(curves, method, segments)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have one entry per curve ({x.shape[0]}), got shape {labels.shape}")
    k = len(np.unique(labels))
    if not 2 <= k <= x.shape[0] - 1:
        raise ValueError(f"scores need between 2 and n_curves - 1 = {x.shape[0] - 1} clusters, got {k}")
    return {"silhouette": float(silhouette_score(x, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
            "davies_bouldin": float(davies_bouldin_score(x, labels))}


def cluster_table(curves: pd.DataFrame, n_clusters: Sequence[int] = (2, 3, 4), methods: Sequence[str] = METHODS,
                  seed: int = 0, segments: Sequence[int] | None = None) -> pd.DataFrame:
    """Every method × every c on the rows of ``curves`` (index: the curves' names, e.g. heads).

    One row per (method, c): the three scores and one column per curve with its cluster label.
    """
    if not isinstance(curves, pd.DataFrame):
        raise TypeError(f"curves must be a DataFrame with one row per curve, got {type(curves).__name__}")
    rows = []
    for method in methods:
        for c in n_clusters:
            labels = cluster_curves(curves.to_numpy(), c, method, seed=seed, segments=segments)
            row = {"method": method, "n_clusters": int(c),
                   **clustering_scores(curves.to_numpy(), labels, method, segments)}
            row.update({str(name): int(lab) for name, lab in zip(curves.index, labels)})
            rows.append(row)
    return pd.DataFrame(rows)


def curve_matrix(frame: pd.DataFrame, data: Sequence[str] | None = None, value: str = "llc_mean",
                 layer: int | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Per-head curves from a tidy sweep frame (:func:`stagewise.refined.head_llc_sweep`): one row
    per head, the curves over ``step`` of each dataset in ``data`` concatenated (App. F.5.1:
    "per-head Pile drLLCs and per-head Github drLLCs concatenated"). Returns the matrix and its
    block lengths (for ``segments``). ``layer`` keeps one layer's heads.
    """
    needed = {"step", "head", "data", value}
    if missing := needed - set(frame.columns):
        raise ValueError(f"frame lacks columns {sorted(missing)} (expected a head_llc_sweep frame)")
    if layer is not None:
        frame = frame[frame["layer"] == layer]
        if frame.empty:
            raise ValueError(f"no heads of layer {layer} in the frame")
    data = list(data) if data is not None else list(dict.fromkeys(frame["data"]))
    blocks, lengths = [], []
    for name in data:
        part = frame[frame["data"] == name]
        if part.empty:
            raise ValueError(f"data {name!r} is not in the frame; it has {sorted(set(frame['data']))}")
        table = part.pivot(index="head", columns="step", values=value)
        table.columns = [f"{name}@{s}" for s in table.columns]
        blocks.append(table)
        lengths.append(table.shape[1])
    out = pd.concat(blocks, axis=1, join="inner")
    if out.isna().any().any():
        raise ValueError("some (head, data, step) values are missing or NaN; every head needs every checkpoint")
    return out, lengths


def chain_split_clusters(frame: pd.DataFrame, n_clusters: int, data: Sequence[str] | None = None,
                         layer: int | None = None, method: str = "shape", seed: int = 0) -> dict:
    """Is a clustering of per-head curves resolved by the SGLD budget? Cluster the curves of each
    chain alone (columns ``llc_chain_<c>`` of a :func:`stagewise.refined.head_llc_sweep` frame) and
    compare the partitions with the one of the chains' mean (``llc_mean``).

    Returns ``{"mean": labels, "chains": [labels per chain], "agreement": [adjusted Rand index of
    each chain's partition against the mean's]}`` (labels: head -> cluster, canonical). An adjusted
    Rand index of 1 is the same partition; ~0 is chance. The
    chains share their minibatches, so their disagreement is a lower bound on the estimates' noise.
    """
    from sklearn.metrics import adjusted_rand_score

    chains = sorted((c for c in frame.columns if c.startswith("llc_chain_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if len(chains) < 2:
        raise ValueError(f"the frame needs per-chain columns llc_chain_0, llc_chain_1, ... (2 or more chains), "
                         f"got {chains or 'none'}")
    curves, segments = curve_matrix(frame, data=data, layer=layer)
    mean = cluster_curves(curves.to_numpy(), n_clusters, method, seed=seed, segments=segments)
    out: dict = {"mean": dict(zip(curves.index, map(int, mean))), "chains": [], "agreement": []}
    for col in chains:
        c_curves, _ = curve_matrix(frame, data=data, value=col, layer=layer)
        c_curves = c_curves.loc[curves.index]
        labels = cluster_curves(c_curves.to_numpy(), n_clusters, method, seed=seed, segments=segments)
        out["chains"].append(dict(zip(curves.index, map(int, labels))))
        out["agreement"].append(float(adjusted_rand_score(mean, labels)))
    return out
