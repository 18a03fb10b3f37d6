"""Probes on a hand-wired two-layer induction circuit (known answers for the attention probes).

The model is the paper's architecture (attention-only, LayerNorm, Shortformer positional
embedding) with weights set by hand, vocabulary 12 (BOS = 11), d_model 80, 4 heads of 20 dims:

* residual subspaces (each token coded ±: +1 at slot t, -1 at slot V + t, so LayerNorm's centring
  is exact and its scale is the same at every position): E = current token, P = previous token
  (written by head 0:0), O = induction prediction (written by head 1:0);
* positional embedding W_pos[k] = (1, k, k²) in three further dims; Shortformer adds it to the
  query/key inputs only, so the layer-0 heads read position and nothing else;
* head 0:0 scores keys by -α (k - (q-1))², i.e. attends to the previous token, and copies its E into P;
* head 0:1 scores keys by -α (k - q)² (current token), output zero;
* head 1:0 matches the query's E with the keys' P (induction) and copies the key's E into O;
* the unembedding reads O; all other heads have zero weights (uniform attention, zero output).
"""

import math

import numpy as np
import pytest
import torch

from stagewise.models.language import LanguageModelConfig, make_language_model
from stagewise.probes import language as L

V, BOS, D, H, N_CTX = 12, 11, 80, 4, 40
D_HEAD = D // H
E, P, O, POS = 0, 2 * V, 4 * V, 6 * V
GAP = 10.0  # attention-logit gap between the target key and the next best one


def _pm(w: torch.Tensor, row: int, offset: int, t: int, scale: float) -> None:
    w[row, offset + t] = scale
    w[row, offset + V + t] = -scale


def induction_model(positional: bool = True):
    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=2, n_ctx=N_CTX, d_model=D, n_heads=H, d_vocab=V))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.blocks[0].ln1, model.blocks[1].ln1, model.ln_final):
            ln.w.fill_(1.0)
        for t in range(V):
            _pm(model.W_E, t, E, t, 1.0)
        if positional:
            k = torch.arange(N_CTX, dtype=torch.float32)
            model.W_pos[:, POS], model.W_pos[:, POS + 1], model.W_pos[:, POS + 2] = 1.0, k, k ** 2
        alpha = GAP * math.sqrt(D_HEAD)  # TransformerLens divides attention logits by sqrt(d_head)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        # 0:0 previous token: q = (2α(q-1), -α), k = (k, k²): q·k = -α (k - (q-1))² + const(q)
        a0.W_Q[0, POS, 0], a0.W_Q[0, POS + 1, 0], a0.W_Q[0, POS, 1] = -2 * alpha, 2 * alpha, -alpha
        a0.W_K[0, POS + 1, 0], a0.W_K[0, POS + 2, 1] = 1.0, 1.0
        # 0:1 current token: q = (2αq, -α)
        a0.W_Q[1, POS + 1, 0], a0.W_Q[1, POS, 1] = 2 * alpha, -alpha
        a0.W_K[1, POS + 1, 0], a0.W_K[1, POS + 2, 1] = 1.0, 1.0
        # LayerNorm scales the ±-coded residual by sqrt(d_model / ‖x‖²): sqrt(40) in layer 0 (E only),
        # sqrt(20) in layer 1 (E + P); the OV circuits undo it so every subspace carries ±1 entries.
        c0, c1 = math.sqrt(D / 2), math.sqrt(D / 4)
        beta = GAP / c1 ** 2 * math.sqrt(D_HEAD)
        for t in range(V):
            a0.W_V[0, E + t, t] = 1.0
            _pm(a0.W_O[0], t, P, t, 1.0 / c0)  # 0:0 writes the previous token into P
            a1.W_Q[0, E + t, t] = beta  # 1:0 query: current token
            a1.W_K[0, P + t, t] = 1.0  # 1:0 key: the key position's previous token
            a1.W_V[0, E + t, t] = 1.0
            _pm(a1.W_O[0], t, O, t, 1.0 / c1)  # 1:0 writes the attended token into O
            model.W_U[O + t, t] = 4.0
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return induction_model()


def test_previous_and_current_token_scores_of_the_wired_heads(model):
    prev, cur, chance = L.previous_and_current_token_scores(model, num_sequences=200, lengths=(8, 32), bos_id=BOS,
                                                            batch_size=64)
    assert prev[0, 0] > 0.999 and cur[0, 1] > 0.999  # the wired heads
    assert prev[0, 1] < 1e-3 and cur[0, 0] < 1e-3  # and nothing else
    assert chance == pytest.approx(float(np.mean(1 / np.arange(8, 33))), rel=0.15)
    for layer, head in [(0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]:  # zero weights: uniform attention = chance
        assert prev[layer, head].item() == pytest.approx(chance, rel=1e-4)
        assert cur[layer, head].item() == pytest.approx(chance, rel=1e-4)


def test_prefix_matching_score_of_the_induction_head(model):
    prefix, dup, chance = L.prefix_matching_scores(model, num_sequences=200, length=N_CTX, bos_id=BOS, batch_size=64)
    assert prefix[1, 0] > 0.99  # attends from the second [A] to [B]
    assert dup[1, 0] < 0.01  # not to the first [A]
    assert chance == pytest.approx(float(np.mean(1 / np.arange(21, 41))), rel=0.1)
    for head in (1, 2, 3):
        assert prefix[1, head].item() == pytest.approx(chance, rel=1e-4)
    assert prefix[0, 0] < 0.1  # the previous-token head looks at a2 - 1, which is [B] only by accident


def test_classification_of_the_wired_heads(model):
    scores = L.attention_head_scores(model, 200, (8, 32), 200, N_CTX, bos_id=BOS)
    types = L.classify_heads(scores)
    expected = {"0:0": "previous-token", "0:1": "current-token", "1:0": "induction"}
    assert types.to_dict() == {label: expected.get(label, "multigram") for label in scores.index}


def _repeated_permutations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(V - 1, generator=g) for _ in range(n)])  # tokens 0..10, no BOS
    return torch.cat([torch.full((n, 1), BOS), perms, perms], dim=1)  # [n, 23]


def test_icl_score_is_negative_for_the_induction_circuit(model):
    tokens = _repeated_permutations(16)
    losses = L.position_losses(model, tokens)
    first, second = losses[:, 1:10].mean(), losses[:, 12:].mean()  # tokens 2..10 vs 13..22
    assert second < 0.01 and first > 1.5  # predicted from the first copy; not before it
    score = L.icl_score(model, tokens, k1=5, k2=17)
    assert score == pytest.approx(float(losses[:, 16].mean() - losses[:, 4].mean()))
    assert score < -1.5


def test_positional_ablation_breaks_the_circuit_and_nothing_else():
    model, flat = induction_model(), induction_model(positional=False)
    tokens = _repeated_permutations(8)
    table = L.positional_ablation_losses(model, tokens)
    assert (table.loc[13:, "difference"] > 1.0).all()  # induction needs the previous-token head
    assert table.loc[13:, "loss"].max() < 0.01
    # a model whose positional embedding is zero is untouched by the ablation
    same = L.positional_ablation_losses(flat, tokens)
    assert np.array_equal(same["loss"].to_numpy(), same["loss_pos_ablated"].to_numpy())


def test_k_composition_of_the_induction_circuit(model):
    k = L.composition_scores(model, "K")
    # W_OV^{0:0} maps the V "+" slots of E onto ±-coded P; W_K^{1:0} reads the "+" slots of P and
    # W_Q^{1:0} the "+" slots of E: ‖W_OV W_K W_Q^T‖ / (‖W_OV‖ ‖W_K W_Q^T‖) = 1 / sqrt(2V)
    assert k[0, 0].item() == pytest.approx(1 / math.sqrt(2 * V), rel=1e-5)
    assert L.composition_scores(model, "Q")[0, 0].item() == pytest.approx(0.0, abs=1e-7)  # queries read E, not P
    # heads with zero OV / QK circuits have no defined score (0/0)
    assert torch.isnan(k[1]).all() and torch.isnan(k[:, 1]).all()


def test_induction_score_on_repeated_tokens(model):
    score, chance = L.induction_scores(model, num_sequences=40, length=N_CTX, bos_id=BOS, batch_size=16)
    # With 11 token types a random copy of 19 tokens repeats tokens: the wired head attends evenly to
    # every key whose previous token is the current one, so at query q it gives the target key
    # 1 / #{j <= q : t_{j-1} = t_q} (one of them is the target).
    tokens = L.repeated_sequences(40, V, BOS, N_CTX, seed=0)
    h = (N_CTX - 1) // 2
    expected = []
    for t in tokens.tolist():
        for q in range(h + 1, 2 * h + 1):
            expected.append(1 / sum(t[j - 1] == t[q] for j in range(1, q + 1)))
    assert score[1, 0].item() == pytest.approx(np.mean(expected), abs=1e-3)
    assert chance == pytest.approx(float(np.mean(1 / np.arange(21, 40))))
    for head in (1, 2, 3):
        assert score[1, head].item() == pytest.approx(chance, rel=1e-4)
    assert score[0, 0] < 0.1


def test_offset_repeat_sequences_copy_one_segment_at_a_varying_distance():
    tokens, a, b = L.offset_repeat_sequences(300, 5000, 4999, length=128, segment=20, seed=1)
    assert tokens.shape == (300, 128) and torch.all(tokens[:, 0] == 4999) and not (tokens[:, 1:] == 4999).any()
    rows = torch.arange(300)[:, None]
    span = torch.arange(20)
    assert torch.equal(tokens[rows, a[:, None] + span], tokens[rows, b[:, None] + span])
    assert (a >= 1).all() and (a + 20 <= 64).all() and (b >= 64).all() and (b + 20 <= 128).all()
    assert len(set((b - a).tolist())) > 40  # the offset varies: no fixed-offset head can copy it
    with pytest.raises(ValueError, match="length"):
        L.offset_repeat_sequences(4, 5000, 4999, length=40, segment=20)


def test_offset_repeat_drop_of_the_induction_circuit_and_without_its_matching():
    model = induction_model()
    got = L.offset_repeat_losses(model, 200, N_CTX, segment=8, bos_id=BOS)
    # the same averages recomputed from the per-token losses: tokens a+1..a+7 and b+1..b+7
    tokens, a, b = L.offset_repeat_sequences(200, V, BOS, N_CTX, 8, seed=0)
    losses = L.position_losses(model, tokens)
    first = np.mean([losses[i, a[i] + j - 1].item() for i in range(200) for j in range(1, 8)])
    second = np.mean([losses[i, b[i] + j - 1].item() for i in range(200) for j in range(1, 8)])
    assert got["first"] == pytest.approx(first) and got["second"] == pytest.approx(second)
    assert got["drop"] > 5  # the second copy is read off the first (11 token types: some ambiguity)
    with torch.no_grad():
        model.blocks[1].attn.W_Q.zero_()  # the induction head attends evenly: no matching
    assert L.offset_repeat_losses(model, 200, N_CTX, segment=8, bos_id=BOS)["drop"] < got["drop"] - 3


def test_induction_circuit_formation_needs_all_three_at_consecutive_probes():
    from stagewise.probes.language_structure import induction_circuit_formation

    steps = [10, 20, 40, 80, 160, 320]
    prev = [0.0, 0.5, 0.5, 0.6, 0.7, 0.8]
    prefix = [0.0, 0.4, 0.1, 0.35, 0.4, 0.5]  # a one-probe blip at 20, then above from 80
    drop = [0.0, 2.0, 2.0, 0.5, 3.0, 4.0]  # below at 80: all three pass first at 160 and 320
    out = induction_circuit_formation(steps, prev, prefix, drop)
    assert out["first_step_above"] == {"previous_token_l0": 20.0, "prefix_matching_l1": 20.0,
                                       "random_offset_drop": 20.0}
    assert out["formed_step"] == 160.0
    assert induction_circuit_formation(steps, prev, prefix, drop, consecutive=1)["formed_step"] == 20.0
    never = induction_circuit_formation(steps, prev, prefix, [np.nan] * 6)  # not measured never passes
    assert never["formed_step"] is None and never["first_step_above"]["random_offset_drop"] is None
    with pytest.raises(ValueError, match="prefix_matching_l1 must hold one value per step"):
        induction_circuit_formation(steps, prev, prefix[:-1], drop)
    with pytest.raises(ValueError, match="consecutive"):
        induction_circuit_formation(steps, prev, prefix, drop, consecutive=0)


def test_language_profiles_name_their_data_in_the_headline_record():
    from stagewise.profiles import get_profile

    plain, long_ = get_profile("language", "cpu").data_record(), get_profile("language", "long").data_record()
    assert plain == {"data": "plain text (the paper's kind of data)", "recipe": None}
    assert long_["data"].startswith("analogue data:")
    assert long_["recipe"]["repeat_mix"]["fraction"] == 0.5 and long_["recipe"]["curriculum"]["n_ctx"] == 32
