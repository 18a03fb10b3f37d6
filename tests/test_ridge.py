import numpy as np
import pytest
import torch

from stagewise.data.regression import RegressionTask, sample_batch, task_set
from stagewise.ridge import dmmse_predict, ridge_predict

SIGMA2 = 0.125


def _batch(n=64, D=3, K=6, seed=0, num_tasks=None):
    task = RegressionTask(task_size=D, max_examples=K, noise_variance=SIGMA2, num_tasks=num_tasks)
    return sample_batch(task, n, torch.Generator().manual_seed(seed))


def _ridge_direct(x, y):
    K, D = x.shape
    out = np.zeros(K)
    for k in range(K):
        X, Y = x[:k], y[:k]
        t = np.linalg.solve(X.T @ X + SIGMA2 * np.eye(D), X.T @ Y) if k else np.zeros(D)
        out[k] = t @ x[k]
    return out


def _dmmse_direct(x, y, tasks):
    K = len(y)
    out = np.zeros(K)
    for k in range(K):
        logw = np.array([-((y[:k] - x[:k] @ t) ** 2).sum() / (2 * SIGMA2) for t in tasks])
        w = np.exp(logw - logw.max())
        out[k] = (w @ tasks / w.sum()) @ x[k]
    return out


def test_ridge_matches_per_sequence_solve():
    b = _batch(n=8)
    pred = ridge_predict(b.xs.double(), b.ys.double(), SIGMA2).numpy()
    for i in range(8):
        np.testing.assert_allclose(pred[i], _ridge_direct(b.xs[i].double().numpy(), b.ys[i].double().numpy()), rtol=1e-8, atol=1e-10)


def test_ridge_predicts_zero_with_no_examples():
    b = _batch()
    assert torch.all(ridge_predict(b.xs, b.ys, SIGMA2)[:, 0] == 0)


def test_dmmse_matches_direct_softmax_and_m1_is_the_root_task():
    tasks = task_set(RegressionTask(task_size=3, num_tasks=5))
    b = _batch(n=6, num_tasks=5)
    pred = dmmse_predict(b.xs.double(), b.ys.double(), tasks.double(), SIGMA2).numpy()
    for i in range(6):
        np.testing.assert_allclose(pred[i], _dmmse_direct(b.xs[i].double().numpy(), b.ys[i].double().numpy(),
                                                          tasks.double().numpy()), rtol=1e-8, atol=1e-10)
    root = tasks[:1]
    np.testing.assert_allclose(dmmse_predict(b.xs, b.ys, root, SIGMA2), b.xs @ root[0], atol=1e-6)


def _dmmse_direct_logsumexp(x, y, tasks):
    """Per-sequence dMMSE_M with scipy's logsumexp over tasks (an independent code path)."""
    from scipy.special import logsumexp

    out = np.zeros(len(y))
    for k in range(len(y)):
        logw = -((y[:k, None] - x[:k] @ tasks.T) ** 2).sum(0) / (2 * SIGMA2)  # [M]
        w = np.exp(logw - logsumexp(logw))
        out[k] = (w @ tasks) @ x[k]
    return out


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_dmmse_is_exact_for_m_2_15_even_where_naive_weights_underflow(scale):
    tasks = task_set(RegressionTask(task_size=3, num_tasks=2**15)).double()
    b = _batch(n=3, K=16)
    xs, ys = b.xs.double() * scale, b.ys.double() * scale
    if scale > 1:  # every un-normalised weight exp(-SSE / 2σ²) is 0.0 in float64 at the last prefix
        sse = ((ys[:, None, :-1] - torch.einsum("bkd,md->bmk", xs[:, :-1], tasks)) ** 2).sum(-1)
        assert torch.all(torch.exp(-sse / (2 * SIGMA2)) == 0)
    pred = dmmse_predict(xs, ys, tasks, SIGMA2, ).numpy()
    assert np.all(np.isfinite(pred))
    for i in range(3):
        np.testing.assert_allclose(pred[i], _dmmse_direct_logsumexp(xs[i].numpy(), ys[i].numpy(), tasks.numpy()),
                                   rtol=1e-7, atol=1e-9)


def test_dmmse_chunking_does_not_change_the_answer():
    from stagewise.ridge import dmmse_task_estimates

    tasks = task_set(RegressionTask(task_size=3, num_tasks=300))
    b = _batch(n=50, K=6)
    whole = dmmse_task_estimates(b.xs, b.ys, tasks, SIGMA2)
    chunked = dmmse_task_estimates(b.xs, b.ys, tasks, SIGMA2, chunk_elements=300 * 6 * 7)  # 7 sequences a chunk
    torch.testing.assert_close(whole, chunked)


def test_dmmse_approaches_ridge_as_task_diversity_grows():
    b = _batch(n=256, D=2, K=8, seed=3)
    ridge = ridge_predict(b.xs, b.ys, SIGMA2)
    gaps = []
    for M in (4, 64, 2**14):
        tasks = task_set(RegressionTask(task_size=2, num_tasks=M, task_seed=1))
        gaps.append(((dmmse_predict(b.xs, b.ys, tasks, SIGMA2) - ridge) ** 2).mean().item())
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.02 * gaps[0]


def test_each_predictor_is_optimal_on_its_own_prior():
    tasks = task_set(RegressionTask(task_size=3, num_tasks=8))
    fin = _batch(n=4000, num_tasks=8, seed=5)
    inf = _batch(n=4000, seed=6)

    def mse(pred, ys):
        return ((pred - ys) ** 2).mean().item()

    assert mse(dmmse_predict(fin.xs, fin.ys, tasks, SIGMA2), fin.ys) < mse(ridge_predict(fin.xs, fin.ys, SIGMA2), fin.ys)
    assert mse(ridge_predict(inf.xs, inf.ys, SIGMA2), inf.ys) < mse(dmmse_predict(inf.xs, inf.ys, tasks, SIGMA2), inf.ys)


def test_bad_inputs():
    b = _batch()
    with pytest.raises(ValueError, match="noise_variance"):
        ridge_predict(b.xs, b.ys, 0.0)
    with pytest.raises(ValueError, match="tasks must be"):
        dmmse_predict(b.xs, b.ys, torch.zeros(4, 2), SIGMA2)
    with pytest.raises(ValueError, match="xs must be"):
        ridge_predict(b.xs[0], b.ys, SIGMA2)
    with pytest.raises(ValueError, match="xs must be"):  # K of xs and ys disagree
        dmmse_predict(b.xs[:, :3], b.ys, torch.zeros(4, 3), SIGMA2)
    with pytest.raises(ValueError, match=r"M >= 1"):  # an empty task set, M = 0
        dmmse_predict(b.xs, b.ys, torch.zeros(0, 3), SIGMA2)
    with pytest.raises(ValueError, match="num_tasks"):
        RegressionTask(task_size=3, num_tasks=0)
