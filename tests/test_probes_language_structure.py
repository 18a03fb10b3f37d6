"""Structural language probes (App. B.4): positional PCA, composition scores, synthetic sequences,
head classification. The attention scores on a hand-wired circuit are in test_probes_language_circuits."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from stagewise.models.language import LanguageModelConfig, make_language_model
from stagewise.probes import language as L


def tiny_model(n_layers=2, n_ctx=16, d_model=32, n_heads=4, d_vocab=50, seed=0):
    torch.manual_seed(seed)
    return make_language_model(LanguageModelConfig(n_layers=n_layers, n_ctx=n_ctx, d_model=d_model,
                                                   n_heads=n_heads, d_vocab=d_vocab)).eval()


# --- positional embedding PCA --------------------------------------------------------------------


def test_pca_of_a_line_and_of_a_circle():
    model = tiny_model()
    k = torch.arange(16, dtype=torch.float32)
    direction, offset = torch.randn(32), torch.randn(32)
    with torch.no_grad():
        model.W_pos.copy_(k[:, None] * direction + offset)
    line = L.positional_embedding_pca(model, num_components=2)
    assert line.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-9)
    centred = (k - k.mean()).double() * direction.double().norm()
    np.testing.assert_allclose(np.abs(line.scores[:, 0]), np.abs(centred.numpy()), atol=1e-4)
    assert np.abs(line.scores[:, 0]).argmax() == np.argmax(line.scores[:, 0])  # sign convention
    np.testing.assert_allclose(line.norms, model.W_pos.detach().norm(dim=1).numpy(), rtol=1e-6)
    # points evenly on a circle in a 2-plane: two components with half the variance each
    angle = 2 * math.pi * k / 16
    with torch.no_grad():
        model.W_pos.zero_()
        model.W_pos[:, 3], model.W_pos[:, 7] = torch.cos(angle), torch.sin(angle)
    circle = L.positional_embedding_pca(model)
    np.testing.assert_allclose(circle.explained_variance_ratio[:3], [0.5, 0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(circle.norms, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="num_components"):
        L.positional_embedding_pca(model, num_components=17)


# --- composition scores, eq. (13) ----------------------------------------------------------------


def _paper_composition(model, kind, h1, h2, fold=False):
    """Eq. (13) literally, in the paper's column-vector convention (W_Q etc. [d_head, d_model])."""
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    f = lambda w: w.detach().double().numpy()  # noqa: E731

    def reads(w, layer):  # TransformerLens [d_model, d_head] -> paper [d_head, d_model]
        if fold:
            gamma = model.blocks[layer].ln1.w.detach().double().numpy()
            d = len(gamma)
            w = (np.eye(d) - np.ones((d, d)) / d) @ np.diag(gamma) @ w
        return w.T

    ov1 = f(a0.W_O[h1]).T @ reads(f(a0.W_V[h1]), 0)
    qk2 = reads(f(a1.W_Q[h2]), 1).T @ reads(f(a1.W_K[h2]), 1)
    ov2 = f(a1.W_O[h2]).T @ reads(f(a1.W_V[h2]), 1)
    m = {"Q": qk2.T, "K": qk2, "V": ov2}[kind]
    return np.linalg.norm(m @ ov1) / (np.linalg.norm(m) * np.linalg.norm(ov1))


@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_composition_scores_equal_eq13_and_transformer_lens(kind):
    model = tiny_model(seed=1)
    scores = L.composition_scores(model, kind)
    expected = np.array([[_paper_composition(model, kind, a, b) for b in range(4)] for a in range(4)])
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
    tl = model.all_composition_scores(kind)[0, :, 1, :].detach()
    torch.testing.assert_close(scores, tl, rtol=1e-4, atol=1e-6)


def test_composition_scores_with_folded_layer_norm():
    model = tiny_model(seed=2)
    with torch.no_grad():
        for block in model.blocks:
            block.ln1.w.uniform_(0.2, 2.0)
    for kind in "QKV":
        scores = L.composition_scores(model, kind, layer_norm="fold")
        expected = np.array([[_paper_composition(model, kind, a, b, fold=True) for b in range(4)] for a in range(4)])
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
        assert not np.allclose(scores.numpy(), L.composition_scores(model, kind).numpy(), rtol=1e-3)


def test_composition_is_one_for_aligned_and_zero_for_orthogonal_subspaces():
    model = tiny_model(seed=3)
    d, dh = 32, 8
    basis = torch.linalg.qr(torch.randn(d, d))[0]  # orthonormal directions of the residual stream
    a, b, c, e = basis[:, 0], basis[:, 1], basis[:, 2], basis[:, 3]
    u = torch.zeros(dh)
    u[0] = 1.0
    with torch.no_grad():
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        a0.W_V[0] = torch.outer(a, u)  # head 0:0 reads a, writes b: W_OV = a b^T (rank 1)
        a0.W_O[0] = torch.outer(u, b)
        a1.W_K[0] = torch.outer(b, u) * 3.0  # 1:0's key reads b (the written direction)
        a1.W_Q[0] = torch.outer(e, u)
        a1.W_K[1] = torch.outer(c, u)  # 1:1's key reads c, orthogonal to b
        a1.W_Q[1] = torch.outer(e, u)
        a1.W_K[2] = torch.outer((b + c) / math.sqrt(2), u)  # 1:2 at 45 degrees
        a1.W_Q[2] = torch.outer(e, u)
    k = L.composition_scores(model, "K")
    assert k[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert k[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert k[0, 2].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert L.composition_scores(model, "Q")[0, 0].item() == pytest.approx(0.0, abs=1e-6)  # 1:0's query reads e


def test_composition_bad_inputs():
    model = tiny_model()
    with pytest.raises(ValueError, match="kind"):
        L.composition_scores(model, "X")
    with pytest.raises(ValueError, match="layer_norm"):
        L.composition_scores(model, "K", layer_norm="center")
    with pytest.raises(ValueError, match="reader_layer"):
        L.composition_scores(model, "K", writer_layer=1, reader_layer=1)
    with pytest.raises(ValueError, match="reader_layer"):
        L.composition_scores(tiny_model(n_layers=1), "K")


# --- synthetic sequences -------------------------------------------------------------------------


def test_previous_token_sequences():
    tokens, lengths = L.previous_token_sequences(2000, d_vocab=7, bos_id=3, lengths=(4, 9), seed=0)
    assert tokens.shape == (2000, 9)
    assert (tokens[:, 0] == 3).all() and not (tokens[:, 1:] == 3).any()
    assert set(lengths.tolist()) == set(range(4, 10))
    counts = torch.bincount(tokens[:, 1:].reshape(-1), minlength=7).double()
    np.testing.assert_allclose((counts[[0, 1, 2, 4, 5, 6]] / counts.sum()).numpy(), 1 / 6, atol=0.01)
    same, _ = L.previous_token_sequences(2000, d_vocab=7, bos_id=3, lengths=(4, 9), seed=0)
    assert torch.equal(tokens, same)
    with pytest.raises(ValueError, match="lengths"):
        L.previous_token_sequences(10, 7, 3, lengths=(9, 4))
    with pytest.raises(ValueError, match="bos_id"):
        L.previous_token_sequences(10, 7, 7)


def test_prefix_matching_sequences():
    tokens, a1, a2 = L.prefix_matching_sequences(500, d_vocab=6, bos_id=5, length=20, seed=0)
    rows = torch.arange(500)
    a, b = tokens[rows, a1], tokens[rows, a1 + 1]
    assert (tokens[:, 0] == 5).all() and not (tokens[:, 1:] == 5).any()
    assert (tokens[rows, a2] == a).all() and (a != b).all()
    assert ((tokens == a[:, None]).sum(1) == 2).all()  # [A] exactly twice
    assert ((tokens == b[:, None]).sum(1) == 1).all()  # [B] once, right after the first [A]
    assert (a1 >= 1).all() and (a1 + 1 <= 9).all() and (a2 >= 10).all() and (a2 <= 19).all()
    assert set(a1.tolist()) == set(range(1, 9)) and set(a2.tolist()) == set(range(10, 20))
    with pytest.raises(ValueError, match="d_vocab"):
        L.prefix_matching_sequences(5, d_vocab=3, bos_id=0, length=20)
    with pytest.raises(ValueError, match="length"):
        L.prefix_matching_sequences(5, d_vocab=10, bos_id=0, length=5)


def test_repeated_sequences():
    tokens = L.repeated_sequences(50, d_vocab=9, bos_id=0, length=21, seed=0)
    assert tokens.shape == (50, 21)
    assert (tokens[:, 0] == 0).all() and not (tokens[:, 1:] == 0).any()
    assert torch.equal(tokens[:, 1:11], tokens[:, 11:])
    with pytest.raises(ValueError, match="length"):
        L.repeated_sequences(5, 9, 0, length=4)


def test_attention_scores_reject_contexts_the_model_lacks():
    model = tiny_model(n_ctx=16)
    with pytest.raises(ValueError, match="lengths"):
        L.previous_and_current_token_scores(model, 10, lengths=(8, 32))
    with pytest.raises(ValueError, match="length"):
        L.prefix_matching_scores(model, 10, length=32)
    with pytest.raises(ValueError, match="length"):
        L.induction_scores(model, 10, length=32)


def test_scores_of_a_random_model_sum_with_the_rest_to_one():
    # attention to previous + current + everything else = 1: both scores lie in [0, 1] and together
    # cannot exceed 1 for any head
    model = tiny_model(seed=4)
    prev, cur, chance = L.previous_and_current_token_scores(model, 64, lengths=(4, 16), batch_size=16)
    assert ((prev >= 0) & (cur >= 0) & (prev + cur <= 1 + 1e-6)).all()
    again = L.previous_and_current_token_scores(model, 64, lengths=(4, 16), batch_size=7)
    torch.testing.assert_close(prev, again[0])  # batching and length-sorting do not change the result
    assert chance == again[2]


def test_attention_scores_through_the_twin_equal_transformer_lens_hooks(monkeypatch):
    """The paper's architecture takes the plain-torch twin's pattern rows at the queries only; every
    score equals the one read from TransformerLens' ``hook_pattern`` (the path other models take)."""
    import stagewise.probes.language_structure as S
    from stagewise.models.language_fast import twin_of

    model = tiny_model(n_ctx=32, seed=5)
    with torch.no_grad():  # peaked, position-dependent attention instead of near-uniform rows
        for block in model.blocks:
            block.attn.W_Q.mul_(30)
            block.attn.W_K.mul_(30)
        model.pos_embed.W_pos.mul_(30)
    assert twin_of(model) is not None

    def scores():
        return (L.previous_and_current_token_scores(model, 40, lengths=(4, 24), batch_size=16)[:2]
                + L.prefix_matching_scores(model, 30, length=32, batch_size=8)[:2]
                + L.induction_scores(model, 12, length=31, batch_size=5)[:1])

    fast = scores()
    monkeypatch.setattr(S, "twin_of", lambda model: None)  # the TransformerLens hook path
    hooked = scores()
    assert max(float(f.std()) for f in fast) > 0.05  # the heads differ: a real comparison
    for f, h in zip(fast, hooked):
        torch.testing.assert_close(f, h, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="queries"):
        twin_of(model).attention_rows(torch.zeros(2, 8, dtype=torch.long), torch.tensor([[8], [0]]))


# --- classification ------------------------------------------------------------------------------


def _scores(prev, cur, prefix):
    table = pd.DataFrame({"previous_token": prev, "current_token": cur, "prefix_matching": prefix},
                         index=[f"0:{i}" for i in range(len(prev))])
    table.attrs["chance"] = {"previous_token": 0.03, "current_token": 0.03, "prefix_matching": 0.01}
    return table


def test_classify_heads_thresholds_and_ties():
    table = _scores(prev=[0.9, 0.05, 0.39, 0.45, 0.1, 0.45],
                    cur=[0.05, 0.8, 0.39, 0.5, 0.1, 0.1],
                    prefix=[0.0, 0.0, 0.29, 0.0, 0.6, 0.3])
    types = L.classify_heads(table).tolist()
    # 0:2 is below every threshold; 0:3 passes two, the larger score wins; 0:5 passes two (0.45/0.4
    # vs 0.3/0.3): the larger raw score wins
    assert types == ["previous-token", "current-token", "multigram", "current-token", "induction", "previous-token"]
    assert L.classify_heads(table, induction_threshold=0.7).iloc[4] == "multigram"
    assert L.PREVIOUS_TOKEN_THRESHOLD > 1 / 3 and L.CURRENT_TOKEN_THRESHOLD > 1 / 3
    assert L.INDUCTION_THRESHOLD >= 25 * np.mean(1 / np.arange(65, 129))  # vs chance at the paper's probe


def test_classify_heads_bad_thresholds():
    table = _scores([0.5], [0.1], [0.1])
    with pytest.raises(ValueError, match="previous_token_threshold"):
        L.classify_heads(table, previous_token_threshold=1.5)
    with pytest.raises(ValueError, match="induction_threshold"):
        L.classify_heads(table, induction_threshold=0.005)  # below the uniform-attention level
    with pytest.raises(ValueError, match="prefix_matching"):
        L.classify_heads(table.drop(columns="prefix_matching"))
