import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from stagewise.data.regression import RegressionBatch, RegressionTask, sample_batch, tokenize
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig
from stagewise.probes import regression as P
from stagewise.ridge import ridge_predict

SIGMA2 = 0.125
TASK = RegressionTask(task_size=4, max_examples=8, noise_variance=SIGMA2)
SMALL = RegressionTransformerConfig(task_size=4, max_examples=8, n_layers=2, n_heads=4, d_embed=16, d_mlp=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The probes run on tiny tensors: with 2 intra-op threads on a shared 2-core machine each
    forward pass waits ~0.3 s on thread hand-offs, with 1 it takes ~1 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n=256, seed=0, task=TASK):
    return sample_batch(task, n, torch.Generator().manual_seed(seed))


def _model(seed=0, cfg=SMALL):
    torch.manual_seed(seed)
    return RegressionTransformer(cfg)


def _repeated_batch(n=64, seed=0):
    """Every example of a sequence is the same (x, y) and there is no noise: ℓ_k is the same for all k
    for any predictor that ignores the context."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, 4, generator=g)
    xs = torch.randn(n, 1, 4, generator=g).expand(n, 8, 4).contiguous()
    ys = torch.einsum("bkd,bd->bk", xs, t)
    return RegressionBatch(tokenize(xs, ys), ys, xs, t)


# --- behaviour -----------------------------------------------------------------------------------

def test_zero_unembedding_predicts_zero():
    model = _model()
    with torch.no_grad():
        model.unembedding.weight.zero_()
        model.unembedding.bias.zero_()
    b = _batch()
    assert P.distance_to_zero(model, b) == 0.0
    assert torch.equal(P.distance_to_zero(model, b, per_token=True), torch.zeros(8))
    assert P.distance_to_task_prior(model, b) == 0.0
    assert math.isclose(float(P.per_token_loss(model, b).mean()), float((b.ys**2).mean()), rel_tol=1e-6)
    ood = P.ood_generalisation(model, b, gains=[0.1, 1.0, 10.0])
    np.testing.assert_allclose(ood["normalised_loss"], 1.0, rtol=1e-6)
    assert (ood["mean_abs_prediction"] == 0).all()


def test_icl_score_from_losses():
    losses = torch.tensor([5.0, 4.5, 4.0, 3.0, 2.5, 2.0, 1.9, 1.0])
    assert P.icl_score(losses, 1, 4) == 2.0
    assert P.icl_score(losses, 4, 8) == 2.0
    with pytest.raises(ValueError, match="k1"):
        P.icl_score(losses, 4, 4)
    with pytest.raises(ValueError, match="K = 8"):
        P.icl_score(losses, 1, 9)


def test_icl_scores_ridge_positive_constant_zero():
    b = _batch(n=4096)
    scores = P.icl_scores(P.RidgePredictor(SIGMA2), b)
    # ℓ_1 = E[y²] = D + σ² for ridge (ŷ_1 = 0); both scores are clearly positive
    assert scores["icl_1_D"] > 1.0 and scores["icl_D_K"] > 0.1
    rep = _repeated_batch()
    for const in (P.TaskPriorPredictor(torch.zeros(4)), P.TaskPriorPredictor(torch.tensor([1.0, -2.0, 0.5, 0.0]))):
        assert P.icl_scores(const, rep) == {"icl_1_D": 0.0, "icl_D_K": 0.0}


def test_function_distances_to_references():
    b = _batch()
    ridge = P.RidgePredictor(SIGMA2)
    assert P.distance_to_ridge(ridge, b, SIGMA2) == 0.0
    t_bar = torch.tensor([0.5, -1.0, 0.0, 2.0])
    prior = P.TaskPriorPredictor(t_bar)
    assert P.distance_to_task_prior(prior, b, t_bar) == 0.0
    assert math.isclose(P.distance_to_zero(prior, b), float(((b.xs @ t_bar) ** 2).mean()), rel_tol=1e-6)
    expected = float(((b.xs @ t_bar - ridge_predict(b.xs, b.ys, SIGMA2)) ** 2).mean())
    assert math.isclose(P.distance_to_ridge(prior, b, SIGMA2), expected, rel_tol=1e-6)
    # the ridge predictor works in the model's output format too
    assert torch.equal(ridge(b.tokens)[:, ::2, 0], ridge.predict(b.tokens))


def test_behaviour_summary_matches_separate_probes():
    model, b = _model(seed=1), _batch()
    t_bar = torch.tensor([0.5, -1.0, 0.0, 2.0])
    summary = P.behaviour_summary(model, b, SIGMA2, t_bar)
    expected = {
        "loss": float(P.per_token_loss(model, b).mean()), **P.icl_scores(model, b),
        "distance_to_zero": P.distance_to_zero(model, b),
        "distance_to_task_prior": P.distance_to_task_prior(model, b, t_bar),
        "distance_to_ridge": P.distance_to_ridge(model, b, SIGMA2),
    }
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-6), key


def test_task_prior_mean():
    assert torch.equal(P.task_prior_mean(TASK), torch.zeros(4))
    finite = RegressionTask(num_tasks=16)
    from stagewise.data.regression import task_set
    assert torch.allclose(P.task_prior_mean(finite), task_set(finite).mean(0))


def test_ood_batch_rescales_and_keeps_noise():
    b = _batch(n=32)
    same = P.ood_batch(b, 1.0, "inputs")
    assert torch.allclose(same.tokens, b.tokens, atol=1e-6)
    noise = b.ys - torch.einsum("bkd,bd->bk", b.xs, b.tasks)
    for kind in ("inputs", "tasks"):
        o = P.ood_batch(b, 9.0, kind)
        assert torch.allclose(o.ys - torch.einsum("bkd,bd->bk", o.xs, o.tasks), noise, atol=1e-5)
    assert torch.allclose(P.ood_batch(b, 9.0, "inputs").xs, 3 * b.xs)
    assert torch.allclose(P.ood_batch(b, 9.0, "tasks").tasks, 3 * b.tasks)


def test_ood_ridge_at_gain_one_is_in_distribution():
    b = _batch(n=1024)
    ridge = P.RidgePredictor(SIGMA2)
    table = P.ood_generalisation(ridge, b, gains=[0.1, 1.0, 10.0])
    in_dist = float(((ridge.predict(b.tokens) - b.ys) ** 2).mean()) / float((b.ys**2).mean())
    at_one = table[table.gain == 1.0]
    assert len(at_one) == 2 and set(at_one.kind) == {"inputs", "tasks"}
    np.testing.assert_allclose(at_one["normalised_loss"], in_dist, rtol=1e-5)
    np.testing.assert_allclose(at_one["loss_over_g2"], at_one["loss"])
    # ridge with the right prior beats the task prior at every gain
    assert (table["normalised_loss"] < 1).all()


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan"), float("inf"), "big"])
def test_bad_gain_raises(gain):
    b = _batch(n=8)
    with pytest.raises(ValueError, match="gain"):
        P.ood_batch(b, gain, "inputs")
    with pytest.raises(ValueError, match="gain"):
        P.ood_generalisation(P.RidgePredictor(SIGMA2), b, gains=[1.0, gain])


def test_bad_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        P.ood_batch(_batch(n=8), 2.0, "outputs")


def test_batch_model_mismatch_raises():
    model = _model()
    b3 = _batch(n=8, task=RegressionTask(task_size=3, max_examples=8))
    with pytest.raises(ValueError, match="task_size"):
        P.per_token_loss(model, b3)
    with pytest.raises(ValueError, match="task_size"):
        P.attention_head_scores(model, b3)
    b_long = _batch(n=8, task=RegressionTask(task_size=4, max_examples=10))
    with pytest.raises(ValueError, match="max_examples"):
        P.icl_scores(model, b_long)
    with pytest.raises(ValueError, match="mean_task"):
        P.distance_to_task_prior(model, _batch(n=8), torch.zeros(3))


# --- structure -----------------------------------------------------------------------------------

def test_embedding_singular_values_and_effective_rank():
    model = _model()
    with torch.no_grad():
        model.token_embedding.weight.zero_()
        for i, s in enumerate([5.0, 4.0, 3.0, 2.0, 1.0]):
            model.token_embedding.weight[3 * i, i] = s
    assert torch.allclose(P.embedding_singular_values(model), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]))
    assert math.isclose(P.effective_rank(torch.ones(6)), 6.0, rel_tol=1e-6)
    assert math.isclose(P.effective_rank(torch.tensor([3.0, 0.0, 0.0])), 1.0, rel_tol=1e-6)
    assert torch.allclose(P.explained_variance(torch.tensor([2.0, 1.0, 1.0])), torch.tensor([4 / 6, 1 / 6, 1 / 6]))
    sv = P.positional_embedding_singular_values(model)
    assert sv.shape == (16,) and torch.allclose((sv**2).sum(), (model.pos_embedding**2).sum())
    assert torch.allclose(P.positional_embedding_norms(model), model.pos_embedding.norm(dim=-1))


def test_subspace_cosines_known_angles():
    eye = torch.eye(6)
    a, b = eye[:3], eye[3:]
    assert torch.allclose(P.subspace_cosines(a, a), torch.ones(3))
    assert torch.allclose(P.subspace_cosines(a, torch.randn(3, 3, generator=torch.Generator().manual_seed(0)) @ a), torch.ones(3))
    assert torch.allclose(P.subspace_cosines(a, b), torch.zeros(3))
    diag = (eye[0] + eye[3]).unsqueeze(0)
    assert torch.allclose(P.subspace_cosines(diag, a), torch.tensor([2**-0.5]))
    assert torch.allclose(P.principal_angle_cosines(a, a), torch.ones(3))
    assert torch.allclose(P.principal_angle_cosines(a, b), torch.zeros(3), atol=1e-7)
    assert torch.allclose(P.principal_angle_cosines(a, torch.cat([eye[:1], eye[4:]])), torch.tensor([1.0, 0.0, 0.0]))


def test_embedding_alignment_identical_and_orthogonal():
    model = _model()
    with torch.no_grad():
        model.token_embedding.weight.copy_(torch.eye(16)[:, :5])
        model.unembedding.weight.copy_(torch.eye(16)[:5] * 3)
        model.pos_embedding.copy_(torch.eye(16)[torch.arange(16) % 11 + 5])  # spans e_5 ... e_15
    assert torch.allclose(P.embedding_alignment(model, "unembedding"), torch.ones(5))
    assert torch.allclose(P.embedding_alignment(model, "positional"), torch.zeros(5))
    with pytest.raises(ValueError, match="other"):
        P.embedding_alignment(model, "mlp")


def test_layer_norm_collapse_counts_small_weights():
    model = _model()
    small = [0, 3, 7, 8, 15]
    with torch.no_grad():
        model.blocks[0].ln_attn.weight[small] = torch.tensor([0.05, -0.09, 0.0, 0.099, -0.01])
        model.blocks[0].ln_attn.weight[1] = 0.1  # exactly the threshold is not small
        model.ln_final.bias.fill_(0.5)
    table = P.layer_norm_collapse(model).set_index("layer_norm")
    assert list(table.index) == ["blocks.0.ln_attn", "blocks.0.ln_mlp", "blocks.1.ln_attn", "blocks.1.ln_mlp", "ln_final"]
    assert table.loc["blocks.0.ln_attn", "frac_small_weight"] == len(small) / 16
    assert (table.drop("blocks.0.ln_attn")["frac_small_weight"] == 0).all()
    assert table.loc["ln_final", "frac_small_bias"] == 0 and table.loc["blocks.1.ln_mlp", "frac_small_bias"] == 1
    assert P.small_weight_fraction(torch.tensor([0.5, -0.2, 0.01]), threshold=0.25) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="threshold"):
        P.small_weight_fraction(torch.ones(3), threshold=0.0)


def test_unembedding_weights_reproduce_the_prediction():
    model = _model(seed=3)
    with torch.no_grad():
        model.ln_final.weight[:10] = 0.01
        model.ln_final.bias.normal_()
    u = P.unembedding_weights(model)
    b = _batch(n=16)
    z = model.residual_stream(b.tokens)[-1][:, ::2]
    z_hat = F.layer_norm(z, (16,), eps=model.ln_final.eps)
    with torch.no_grad():
        assert torch.allclose(z_hat @ u.effective_weight + u.effective_bias, model.predict(b.tokens), atol=1e-5)
    stats = P.unembedding_collapse(model)
    assert stats["frac_small_ln_weight"] == 10 / 16
    assert stats["frac_small_effective"] >= 10 / 16


def test_attention_entropy_uniform_and_one_hot():
    T = 6
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    expected = torch.log2(torch.arange(1, T + 1, dtype=torch.float32))
    assert torch.allclose(P.attention_entropy(uniform), expected, atol=1e-6)
    norm = P.attention_entropy(uniform, normalised=True)
    assert torch.isnan(norm[0]) and torch.allclose(norm[1:], torch.ones(T - 1))
    prev = torch.zeros(T, T)
    prev[0, 0] = 1
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1
    assert torch.equal(P.attention_entropy(prev), torch.zeros(T))


def test_attention_variability_known_values():
    T = 4
    uniform = (torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)).expand(5, 2, T, T)
    assert torch.allclose(P.attention_variability(uniform), torch.zeros(2, T))
    a = torch.zeros(2, 2, 2)
    a[:, 0, 0] = 1
    a[0, 1, 0], a[1, 1, 1] = 1, 1  # position 1: sample 0 attends to 0, sample 1 to 1
    assert torch.allclose(P.attention_variability(a), torch.tensor([0.0, 0.5]))


class _FixedAttention(RegressionTransformer):
    """A model whose attention patterns are hand-set: uniform causal, except one-hot at the final y query."""

    def attention_patterns(self, tokens):
        B, T = tokens.shape[0], tokens.shape[1]
        pats = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
        pats[-1] = 0
        pats[-1, 0] = 1
        return pats.expand(B, self.cfg.n_layers, self.cfg.n_heads, T, T)


def test_attention_head_scores_split_x_y_and_omit_final_y():
    model = _FixedAttention(SMALL)
    table = P.attention_head_scores(model, _batch(n=8))
    assert len(table) == 2 * 4 * 2 and table.label.iloc[0] == "B1H1x" and "B2H4y" in set(table.label)
    log2 = np.log2(np.arange(1, 17))
    x_rows, y_rows = table[table.token == "x"], table[table.token == "y"]
    np.testing.assert_allclose(x_rows.entropy, log2[0::2].mean(), rtol=1e-5)
    np.testing.assert_allclose(y_rows.entropy, log2[1:15:2].mean(), rtol=1e-5)  # position 15 left out
    np.testing.assert_allclose(table.normalised_entropy, 1.0, rtol=1e-5)
    np.testing.assert_allclose(table.variability, 0.0, atol=1e-6)


def test_mean_attention_patterns_real_model():
    model = _model()
    b = _batch(n=32)
    mean = P.mean_attention_patterns(model, b)
    assert mean.shape == (2, 4, 16, 16)
    assert torch.allclose(mean.sum(-1), torch.ones(2, 4, 16), atol=1e-5)
    assert torch.equal(mean.triu(1), torch.zeros_like(mean))
    table = P.attention_head_scores(model, b)
    assert table.normalised_entropy.between(0, 1 + 1e-6).all() and table.variability.between(0, 1).all()


# --- over checkpoints ------------------------------------------------------------------------------

def test_probe_checkpoints_matches_direct_calls_and_leaves_models_alone():
    models = {step: _model(seed=step) for step in (0, 10, 100)}
    before = {s: {k: v.clone() for k, v in m.state_dict().items()} for s, m in models.items()}
    b = _batch(n=64)
    table = P.probe_checkpoints(models.__getitem__, [0, 10, 100], b, progress=False)
    assert isinstance(table, pd.DataFrame) and list(table.step) == [0, 10, 100]
    assert table.columns[0] == "step" and not table.drop(columns="step").isna().all().any()
    for step, model in models.items():
        row = table.set_index("step").loc[step]
        assert row["behaviour.distance_to_zero"] == P.distance_to_zero(model, b)
        assert row["behaviour.icl_1_D"] == P.icl_scores(model, b)["icl_1_D"]
        heads = P.attention_head_scores(model, b).set_index("label")
        assert row["attention.B1H2y.normalised_entropy"] == heads.loc["B1H2y", "normalised_entropy"]
        assert row["attention.B2H3x.variability"] == heads.loc["B2H3x", "variability"]
        ood = P.ood_generalisation(model, b, gains=[10.0]).set_index("kind")
        assert row["ood.tasks.g=10.normalised_loss"] == ood.loc["tasks", "normalised_loss"]
        assert all(torch.equal(v, before[step][k]) for k, v in model.state_dict().items())
    again = P.probe_checkpoints(models.__getitem__, [0, 10, 100], b, progress=False)
    pd.testing.assert_frame_equal(table, again)


def test_probe_checkpoints_custom_probes_and_errors():
    models = {1: _model()}
    b = _batch(n=16)
    table = P.probe_checkpoints(models.__getitem__, [1], b, {"e2": P.distance_to_zero}, progress=False)
    assert list(table.columns) == ["step", "e2"]
    with pytest.raises(ValueError, match="steps"):
        P.probe_checkpoints(models.__getitem__, [], b, progress=False)
    b3 = _batch(n=8, task=RegressionTask(task_size=3, max_examples=8))
    with pytest.raises(ValueError, match="task_size"):
        P.probe_checkpoints(models.__getitem__, [1], b3, progress=False)


def test_probe_checkpoint_is_one_row_and_weights_over_training_stacks():
    models = {0: _model(seed=0), 5: _model(seed=5)}
    b = _batch(n=32)
    row = P.probe_checkpoint(models[5], b)
    table = P.probe_checkpoints(models.__getitem__, [0, 5], b, progress=False).set_index("step")
    assert row == table.loc[5].to_dict()
    sv = P.embedding_singular_values(models[5])
    assert row["embedding.min_variance_fraction"] == pytest.approx(float(sv[-1] ** 2 / (sv**2).sum()))
    assert row["positional.sv15"] == pytest.approx(float(P.positional_embedding_singular_values(models[5])[-1]))
    w = P.weights_over_training(models.__getitem__, [0, 5], lambda m: {"gamma": m.ln_final.weight * 2})
    assert w["gamma"].shape == (2, 16)
    assert torch.equal(w["gamma"][1], models[5].ln_final.weight.detach() * 2)
    with pytest.raises(ValueError, match="steps"):
        P.weights_over_training(models.__getitem__, [], lambda m: {})


# --- stage signatures --------------------------------------------------------------------------------

from stagewise.probes import regression_signatures as S  # noqa: E402
from stagewise.stages import Stage  # noqa: E402

STEPS = np.unique(np.round(np.geomspace(1, 10_000, 60)))


def _sigmoid(steps, centre, width=0.3):
    return 1 / (1 + np.exp(-(np.log10(steps) - np.log10(centre)) / width * 4))


def test_change_window_finds_a_sigmoid_rise_and_fall():
    v = 2.0 + 3.0 * _sigmoid(STEPS, 1_000)
    c = S.change_window(STEPS, v, "rise")
    assert c.size == pytest.approx(v[-1] - v[0]) and (c.before, c.after) == (v[0], v[-1])
    # the first checkpoint past 50% is the first at or after the centre (within one checkpoint)
    assert c.step == STEPS[np.argmax(v >= v[0] + 0.5 * c.size)] and 1_000 <= c.step < 1_000 * 1.2
    assert c.start < c.step < c.end
    assert S.change_window(STEPS, -v, "fall") == S.Change(c.size, c.start, c.step, c.end, -v[0], -v[-1])
    # a curve that rises and then falls by more: the fall is the largest fall, the rise the largest rise
    w = np.concatenate([np.zeros(10), np.ones(10), -np.ones(10)])
    s = np.arange(1, 31)
    assert S.change_window(s, w, "rise").size == 1 and S.change_window(s, w, "rise").step == 11
    fall = S.change_window(s, w, "fall")
    assert fall.size == 2 and (fall.before, fall.after) == (1, -1) and fall.step == 21
    with pytest.raises(ValueError, match="direction"):
        S.change_window(s, w, "up")
    with pytest.raises(ValueError, match="increasing"):
        S.change_window(s[::-1], w, "rise")


def test_minimum_and_dip():
    v = np.array([0.0, -0.1, -0.4, -0.2, 0.1, 0.5, 0.45])
    s = np.array([1, 2, 4, 8, 16, 32, 64])
    assert S.curve_minimum(s, v) == (4.0, -0.4)
    d = S.dip(s, v)
    assert (d.step, d.value) == (4.0, -0.4)
    assert d.depth == pytest.approx(0.4) and d.rebound == pytest.approx(0.9)
    assert d.start == 2.0 and d.end == 16.0  # last above -0.2 before, first above 0.05 after
    mono = S.dip(s, np.arange(7.0))  # no dip: minimum at the start
    assert mono.depth == 0 and mono.step == 1.0


def test_align_stages_by_llc_direction():
    def stages(*deltas):
        return [Stage(i, i + 1, "increase" if d > 0 else "decrease", 1, d) for i, d in enumerate(deltas)]

    # flat start (edge plateau), rise, fall, rise: the paper's LR3 and LR4 merge
    assert S.align_stages(stages(0.5, 130, -60, 10)) == [("LR1",), ("LR2",), ("LR3", "LR4"), ("LR5",)]
    # a flat start with a slightly negative Δ is still flat
    assert S.align_stages(stages(-0.5, 130, -60, 10)) == [("LR1",), ("LR2",), ("LR3", "LR4"), ("LR5",)]
    assert S.align_stages(stages(130, -60, 10)) == [("LR1", "LR2"), ("LR3", "LR4"), ("LR5",)]
    assert S.align_stages(stages(20, 100, -30, -40, 10)) == [("LR1",), ("LR2",), ("LR3",), ("LR4",), ("LR5",)]
    assert S.align_stages(stages(-30, 100)) is None  # starts with a decrease
    assert S.align_stages(stages(100, -30, 10, -20)) is None  # one more change than the paper
    # the run ends in the decrease (no final rise resolved): LR5 is left unmatched
    assert S.align_stages(stages(0.5, 130, -60)) == [("LR1",), ("LR2",), ("LR3", "LR4")]


def test_boundary_table_pairs_boundaries_with_the_papers():
    labels = [("LR1",), ("LR2",), ("LR3", "LR4"), ("LR5",)]
    table = S.boundary_table([124, 1694, 7185], [[13, 124], [1541, 2062], [6879, 7608]], labels, 10_000)
    assert list(table.boundary) == ["LR1|LR2", "LR2|LR3", "LR3|LR4", "LR4|LR5"]
    assert list(table.paper) == [1_000, 40_000, 126_000, 320_000]
    np.testing.assert_allclose(table.rescaled, [20, 800, 2520, 6400])
    np.testing.assert_array_equal(table.detected, [124, 1694, np.nan, 7185])
    assert table.interval_hi.iloc[3] == 7608
    with pytest.raises(ValueError, match="labels"):
        S.boundary_table([124], [[1, 2]], labels, 10_000)
    short = S.boundary_table([81, 1681], [[10, 81], [1594, 1771]], labels[:3], 10_000)
    np.testing.assert_array_equal(short.detected, [81, 1681, np.nan, np.nan])


def test_signature_table_measures_and_places_each_signature():
    probes = pd.DataFrame({
        "step": STEPS,
        "a.h1.e": 1.0 - 0.1 * _sigmoid(STEPS, 100),  # falls by 0.1
        "a.h2.e": 1.0 - 0.8 * _sigmoid(STEPS, 3_000),  # falls by 0.8: the one reported
        "ln": 0.7 * _sigmoid(STEPS, 5_000),
        "d": 0.2 - 0.3 * _sigmoid(STEPS, 30) + 0.1 * _sigmoid(STEPS, 2_000),
    })
    sigs = [
        S.Signature("LR2", "heads harden", "a.*.e", "fall", 0.3),
        S.Signature("LR3", "collapse", "ln", "rise", 0.5),
        S.Signature("LR4", "big collapse", "ln", "rise", 0.9),
        S.Signature("LR1", "low", "d", "minimum", 0.0),
        S.Signature("LR2", "halves", "a.h2.e", "fall", 0.5, relative=True),
        S.Signature("LR2", "onset", "a.h2.e", "fall", 0.5, at="start"),
    ]
    labels = [("LR1",), ("LR2",), ("LR3", "LR4"), ("LR5",)]
    table = S.signature_table(probes, sigs, boundaries=[124, 1694, 7185], labels=labels).set_index("signature")
    heads = table.loc["heads harden"]
    assert heads.column == "a.h2.e" and heads.effect == pytest.approx(0.8, abs=0.01) and heads.appears
    assert 3_000 <= heads.step < 3_600 and heads["our stage"] == 3 and heads["our stage name"] == "LR3+LR4"
    assert not heads.in_paper_stage  # appears, but in LR3+LR4 rather than LR2
    assert table.loc["collapse"].appears and table.loc["collapse"].in_paper_stage
    assert not table.loc["big collapse"].appears and not table.loc["big collapse"].in_paper_stage
    low = table.loc["low"]
    assert low.appears and low.value_after == pytest.approx(probes.d.min()) and low.step < 1_694
    assert table.loc["halves"].effect == pytest.approx(0.8, abs=0.01) and table.loc["halves"].appears
    onset = table.loc["onset"]  # timed by its 10% point, the window's start
    assert onset.step == onset.start == heads.start and onset.step < heads.step and onset["our stage"] == 3
    lowest = S.evaluate_signature(probes, S.Signature("LR2", "lowest", "a.*.e", "minimum", 0.5))
    assert lowest["column"] == "a.h2.e" and lowest["effect"] == pytest.approx(probes["a.h2.e"].min())
    with pytest.raises(ValueError, match="no probe column"):
        S.evaluate_signature(probes, S.Signature("LR1", "x", "nope.*", "rise", 1))
    with pytest.raises(ValueError, match="kind"):
        S.Signature("LR1", "x", "ln", "wiggle", 1)
    with pytest.raises(ValueError, match="relative"):
        S.Signature("LR1", "x", "ln", "minimum", 1, relative=True)
    with pytest.raises(ValueError, match="at="):
        S.Signature("LR1", "x", "ln", "dip", 1, at="start")


def test_paper_signatures_name_real_probe_columns():
    ridge = P.behaviour_summary(P.RidgePredictor(SIGMA2), _batch(n=1024), SIGMA2)
    sigs = S.paper_signatures(SIGMA2, ridge)
    assert {s.stage for s in sigs} == {"LR1", "LR2", "LR3", "LR4"}
    models = {0: _model(0), 1: _model(1)}
    probes = P.probe_checkpoints(models.__getitem__, [0, 1], _batch(n=32), progress=False)
    table = S.signature_table(probes, sigs)  # raises if a pattern names no column
    assert len(table) == len(sigs) and table.appears.dtype == bool
    with pytest.raises(ValueError, match="icl_1_D"):
        S.paper_signatures(SIGMA2, {"icl_D_K": 0.2})
