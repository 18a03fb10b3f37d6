import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from stagewise.clustering import (cluster_curves, cluster_table, clustering_scores, correlation_distance, curve_matrix,
                                  znormalise)

T = np.linspace(0, 1, 40)


def _rise(t):  # an early sigmoid rise (like a head that forms early)
    return 1 / (1 + np.exp(-(t - 0.25) / 0.04))


def _bump(t):  # a rise and fall peaking late (like a head that peaks and is pruned)
    return np.exp(-((t - 0.7) / 0.12) ** 2)


def _families(scales, noise=0.02, seed=0, offset=0.3):
    """Rows: family A (rise) then family B (bump), one curve per scale each, plus small noise."""
    rng = np.random.default_rng(seed)
    rows, shape, scale = [], [], []
    for fam, f in enumerate((_rise, _bump)):
        for s in scales:
            rows.append(s * (f(T) + noise * rng.standard_normal(T.size)) + offset * s)
            shape.append(fam)
            scale.append(s)
    return np.array(rows), np.array(shape), np.array(scale)


@pytest.mark.parametrize("method", ["kmeans", "ward", "shape"])
def test_every_method_recovers_two_planted_families(method):
    curves, shape, _ = _families(scales=[1.0, 1.05, 0.95, 1.1], noise=0.03)
    labels = cluster_curves(curves, 2, method, seed=0)
    assert adjusted_rand_score(shape, labels) == 1.0
    assert labels[0] == 0  # canonical labels: the first row's cluster is 0


def test_shape_distance_groups_by_shape_where_euclidean_groups_by_scale():
    # each family has low and high members (level and amplitude x10): Euclidean distance is dominated by scale
    curves, shape, scale = _families(scales=[1.0, 1.2, 10.0, 12.0], noise=0.02, offset=2.0)
    euclid = cluster_curves(curves, 2, "kmeans", seed=0)
    ward = cluster_curves(curves, 2, "ward")
    by_shape = cluster_curves(curves, 2, "shape", seed=0)
    assert adjusted_rand_score(scale > 5, euclid) == 1.0 and adjusted_rand_score(shape, euclid) < 0.5
    assert adjusted_rand_score(scale > 5, ward) == 1.0
    assert adjusted_rand_score(shape, by_shape) == 1.0
    # the distance itself: same shape at scale 1 and 10 is near 0, different shapes far apart
    d = correlation_distance(curves)
    assert d[0, 2] < 0.01 and d[0, 4] > 0.5
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0, atol=1e-12)


def test_correlation_distance_matches_pearson():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 25))
    d = correlation_distance(x)
    assert d[0, 1] == pytest.approx(1 - np.corrcoef(x[0], x[1])[0, 1], abs=1e-12)
    # invariant to scale and offset
    y = x.copy()
    y[1] = 7.0 * y[1] - 3.0
    assert np.allclose(correlation_distance(y), d)


def test_segments_normalise_each_block_separately():
    curves, shape, _ = _families(scales=[1.0, 1.1, 0.9], noise=0.02)
    z = znormalise(np.hstack([curves, 100 * curves]), segments=[T.size, T.size])
    assert np.allclose(z[:, :T.size].mean(1), 0) and np.allclose(z[:, T.size:].std(1), 1)
    assert np.allclose(z[:, :T.size], z[:, T.size:])  # the 100x block has the same shape
    labels = cluster_curves(np.hstack([curves, curves[:, ::-1]]), 2, "shape", segments=[T.size, T.size])
    assert adjusted_rand_score(shape, labels) == 1.0


def test_scores_prefer_the_true_partition():
    curves, shape, _ = _families(scales=[1.0, 1.05, 0.95, 1.1], noise=0.03)
    good = clustering_scores(curves, shape, "kmeans")
    bad = clustering_scores(curves, np.array([0, 1] * 4), "kmeans")
    assert good["silhouette"] > 0.8 > bad["silhouette"]
    assert good["calinski_harabasz"] > 10 * bad["calinski_harabasz"]
    assert good["davies_bouldin"] < bad["davies_bouldin"]


def test_same_seed_same_labels_and_table():
    curves, shape, _ = _families(scales=[1.0, 1.3, 0.8], noise=0.2, seed=3)
    frame = pd.DataFrame(curves, index=[f"0:{i}" for i in range(len(curves))])
    a = cluster_table(frame, n_clusters=(2, 3), seed=0)
    b = cluster_table(frame, n_clusters=(2, 3), seed=0)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 * 2 and set(a["method"]) == {"kmeans", "ward", "shape"}
    assert {"silhouette", "calinski_harabasz", "davies_bouldin", "0:0", "0:5"} <= set(a.columns)


def test_curve_matrix_concatenates_datasets_per_head():
    rows = []
    for data, k in (("train", 1.0), ("code", -1.0)):
        for head in ("0:0", "0:1", "1:0"):
            for step in (10, 20, 30):
                rows.append({"step": step, "head": head, "layer": int(head[0]), "data": data,
                             "llc_mean": k * step + int(head[-1])})
    frame = pd.DataFrame(rows)
    m, lengths = curve_matrix(frame, data=["train", "code"])
    assert lengths == [3, 3] and list(m.index) == ["0:0", "0:1", "1:0"]
    assert m.loc["0:1"].tolist() == [11, 21, 31, -9, -19, -29]
    m0, _ = curve_matrix(frame, data=["train"], layer=0)
    assert list(m0.index) == ["0:0", "0:1"]
    with pytest.raises(ValueError, match="data 'german'"):
        curve_matrix(frame, data=["german"])


def test_bad_inputs():
    curves, _, _ = _families(scales=[1.0, 1.1])
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_curves(curves, 4, "kmeans")
    with pytest.raises(ValueError, match="method"):
        cluster_curves(curves, 2, "dtw")
    with pytest.raises(ValueError, match="constant"):
        cluster_curves(np.vstack([curves, np.ones(T.size)]), 2, "shape")
    with pytest.raises(ValueError, match="NaN"):
        cluster_curves(np.where(curves > 0.5, np.nan, curves), 2)
    with pytest.raises(ValueError, match="segments"):
        znormalise(curves, segments=[10, 10])


def _chain_frame(chain_curves: list[np.ndarray]) -> pd.DataFrame:
    """A head-sweep frame (one data set, layer 1) whose chains have the given curves [heads, steps]."""
    rows = []
    n_heads, n_steps = chain_curves[0].shape
    for h in range(n_heads):
        for i in range(n_steps):
            per_chain = [c[h, i] for c in chain_curves]
            rows.append({"step": 10 * (i + 1), "head": f"1:{h}", "layer": 1, "data": "train",
                         "llc_mean": float(np.mean(per_chain)),
                         **{f"llc_chain_{k}": float(v) for k, v in enumerate(per_chain)}})
    return pd.DataFrame(rows)


def test_chain_split_clusters_agree_when_every_chain_resolves_the_families():
    from stagewise.clustering import chain_split_clusters

    a, shape, _ = _families(scales=[1.0, 1.05, 0.95, 1.1], noise=0.03, seed=1)
    b, _, _ = _families(scales=[1.0, 1.05, 0.95, 1.1], noise=0.03, seed=2)
    out = chain_split_clusters(_chain_frame([a, b]), 2)
    assert out["agreement"] == [1.0, 1.0]  # the same partition as the mean's
    assert adjusted_rand_score(shape, list(out["mean"].values())) == 1.0


def test_chain_split_clusters_flag_a_chain_that_puts_a_head_in_the_other_family():
    from stagewise.clustering import chain_split_clusters

    a, shape, _ = _families(scales=[1.0, 1.05, 0.95, 1.1], noise=0.03, seed=1)
    b = a.copy()
    b[0] = a[-1]  # chain 1 sees head 0 (a rise) as a bump; the mean of the three chains is still a rise
    c = a.copy()
    out = chain_split_clusters(_chain_frame([a, b, c]), 2)
    assert out["chains"][1]["1:0"] == out["chains"][1]["1:7"]  # chain 1: head 0 with the bumps
    assert out["chains"][0]["1:0"] != out["chains"][0]["1:7"]
    assert out["agreement"][0] == 1.0 and out["agreement"][2] == 1.0 and out["agreement"][1] < 1.0
    with pytest.raises(ValueError, match="llc_chain_0"):
        chain_split_clusters(_chain_frame([a]).drop(columns=["llc_chain_0"]), 2)
