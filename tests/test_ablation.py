import pandas as pd
import pytest
import torch

from stagewise.models.language import LanguageModelConfig, make_language_model, per_token_loss
from stagewise.probes.ablation import (ablated_per_token_loss, ablation_hooks, ablation_scores, classify_tokens_in_context,
                                       dyck_pattern, head_output_means, icl_score_under_ablation, induction_pattern,
                                       pattern_fractions, per_head_icl_scores, tokens_in_context)

V = 50


def _model(n_layers=1, seed=0):
    torch.manual_seed(seed)
    return make_language_model(LanguageModelConfig(n_layers=n_layers, n_ctx=16, d_model=32, n_heads=4, d_vocab=V)).eval()


def _tokens(n=12, t=16, seed=0):
    return torch.randint(0, V, (n, t), generator=torch.Generator().manual_seed(seed))


def _resid_post(model, tokens, hooks=()):
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    store = {}

    def grab(x, hook):
        store["x"] = x.detach().clone()

    model.run_with_hooks(tokens, fwd_hooks=list(hooks) + [(name, grab)])
    return store["x"]


@torch.no_grad()
def test_hand_set_head_output_zero_and_mean_ablation_change_the_residual_exactly():
    model, tokens = _model(), _tokens()
    h, c = 2, torch.tensor([0.5, -0.25, 1.0, 0.0, 2.0, -1.0, 0.75, 0.125])
    model.blocks[0].attn.W_V[h] = 0.0  # head 2 now outputs z = Σ_j p_j c = c at every position
    model.blocks[0].attn.b_V[h] = c
    clean = _resid_post(model, tokens)

    zero = _resid_post(model, tokens, ablation_hooks(model, "0:2", "zero"))
    expected = -(c @ model.blocks[0].attn.W_O[h])  # the head's term c W_O^h removed, b_O kept
    torch.testing.assert_close(zero - clean, expected.expand_as(clean), atol=1e-5, rtol=0)

    means = head_output_means(model, tokens)
    torch.testing.assert_close(means[0, :, h], c.expand(16, -1), atol=1e-6, rtol=0)
    mean = _resid_post(model, tokens, ablation_hooks(model, "0:2", "mean", means))
    torch.testing.assert_close(mean, clean, atol=1e-5, rtol=0)  # replacing c by its mean c changes nothing


@torch.no_grad()
def test_mean_ablation_replaces_exactly_the_heads_term_by_its_mean():
    model, tokens, ref = _model(), _tokens(), _tokens(40, seed=1)
    means = head_output_means(model, ref)
    _, cache = model.run_with_cache(tokens)
    z = cache["blocks.0.attn.hook_z"]
    clean = _resid_post(model, tokens)
    ablated = _resid_post(model, tokens, ablation_hooks(model, ["0:1", "0:3"], "mean", means))
    w_o = model.blocks[0].attn.W_O
    expected = sum((means[0, :, h] - z[:, :, h]) @ w_o[h] for h in (1, 3))
    torch.testing.assert_close(ablated - clean, expected, atol=1e-5, rtol=1e-5)
    # position-free means: the mean over positions of the per-position means
    flat = head_output_means(model, ref, per_position=False)
    assert flat.shape == (1, 1, 4, 8)
    torch.testing.assert_close(flat[0, 0], means[0].mean(0), atol=1e-6, rtol=0)
    # the reference mean itself, by hand
    _, ref_cache = model.run_with_cache(ref)
    torch.testing.assert_close(means[0], ref_cache["blocks.0.attn.hook_z"].mean(0), atol=1e-6, rtol=0)


@torch.no_grad()
def test_a_silent_head_has_ablation_score_zero_and_others_do_not():
    model, tokens = _model(n_layers=2), _tokens()
    model.blocks[1].attn.W_O[0] = 0.0  # head 1:0 writes nothing
    scores = ablation_scores(model, tokens, heads=["1:0", "1:1", "0:2"])
    clean = per_token_loss(model(tokens), tokens).mean().item()
    assert scores["loss"].tolist() == pytest.approx([clean] * 3, abs=1e-6)
    s = scores.set_index("head")["score"]
    assert s["1:0"] == 0.0
    assert abs(s["1:1"]) > 1e-4 and abs(s["0:2"]) > 1e-4
    zero = ablation_scores(model, tokens, heads=["1:0"], kind="zero")
    assert zero["score"].iloc[0] == 0.0


@torch.no_grad()
def test_icl_score_under_ablation_and_per_head_scores():
    model, tokens = _model(n_layers=2), _tokens(20)
    losses = per_token_loss(model(tokens), tokens)
    plain = icl_score_under_ablation(model, tokens, k1=2, k2=12)
    assert plain == pytest.approx((losses[:, 11] - losses[:, 1]).mean().item(), abs=1e-6)
    means = head_output_means(model, tokens)
    scores = per_head_icl_scores(model, tokens, k1=2, k2=12, heads=("1:0", "1:1"), means=means)
    assert set(scores) == {"none", "1:0", "1:1", "all"}
    assert scores["none"] == pytest.approx(plain, abs=1e-6)
    # the per-head score of 1:0 is the ICL score with the *other* head (1:1) mean-ablated
    assert scores["1:0"] == icl_score_under_ablation(model, tokens, 2, 12, ["1:1"], "mean", means)
    assert scores["all"] == icl_score_under_ablation(model, tokens, 2, 12, ["1:0", "1:1"], "mean", means)
    assert scores["1:0"] != scores["1:1"]
    with pytest.raises(ValueError, match="k2"):
        icl_score_under_ablation(model, tokens, k1=2, k2=16)
    with pytest.raises(ValueError, match="smaller"):
        icl_score_under_ablation(model, tokens, k1=5, k2=5)


@torch.no_grad()
def test_tokens_in_context_are_the_largest_loss_increases():
    model, tokens = _model(n_layers=2), _tokens(10)
    means = head_output_means(model, tokens)
    top = tokens_in_context(model, tokens, "1:2", top_k=25, means=means, batch_size=3)
    clean = ablated_per_token_loss(model, tokens)
    ablated = ablated_per_token_loss(model, tokens, ["1:2"], "mean", means)
    increase = (ablated - clean).reshape(-1)
    assert len(top) == 25 and top["increase"].is_monotonic_decreasing
    torch.testing.assert_close(torch.tensor(top["increase"].to_numpy(), dtype=torch.float32),
                               increase.sort(descending=True).values[:25], atol=1e-6, rtol=0)
    _, cache = model.run_with_cache(tokens)
    pattern = cache["blocks.1.attn.hook_pattern"][:, 2]
    for row in top.itertuples():
        assert row.increase == pytest.approx(increase[row.sample * 15 + row.position].item(), abs=1e-6)
        assert row.max_attention == int(pattern[row.sample, row.position].argmax())
        assert row.token == tokens[row.sample, row.position] and row.next_token == tokens[row.sample, row.position + 1]
        assert row.max_attention <= row.position  # causal


def test_induction_pattern_on_hand_written_sequences():
    seq = [9, 5, 7, 3, 4, 5, 7]  # [A]=5 [B]=7 ... [A]=5 -> [B]=7
    assert induction_pattern(seq, 5)
    assert induction_pattern(seq, 5, max_attention=2)  # the first [B]: an induction head
    assert induction_pattern(seq, 5, max_attention=5) and induction_pattern(seq, 5, max_attention=4)
    assert not induction_pattern(seq, 5, max_attention=0)  # attends elsewhere
    assert not induction_pattern([9, 5, 7, 3, 4, 5, 8], 5)  # [A] repeats, but not followed by [B]
    assert not induction_pattern([9, 5, 7, 3, 4, 7, 5], 5)  # order matters: 7 then 5 never seen
    assert induction_pattern([1, 2, 3, 1, 2, 3], 4)  # the longer repeat 1 2 3 contains the pair 2 3
    with pytest.raises(ValueError, match="position"):
        induction_pattern(seq, 6)


def test_dyck_pattern_on_hand_written_sequences():
    assert dyck_pattern(["f", "(", "a", " [", "b", "]", " c"], 5) is False  # next token " c" closes nothing
    assert dyck_pattern(["f", "(", "a", " [", "b", "]", " c", ")"], 6)  # ( a [ b ] c ) nested correctly
    assert not dyck_pattern(["f", "(", "a", " [", "b", ")"], 4)  # ( a [ b ) crosses brackets
    assert not dyck_pattern(["a", " b", ")"], 1)  # no opener
    assert dyck_pattern(["{", "x", "})."], 1)  # the closer sits inside the next token
    assert not dyck_pattern(["(", "x", "]"], 1)  # wrong kind
    assert dyck_pattern(["He", " said", ' "', "hi", '"'], 3)  # straight quotes: opener after a space
    assert not dyck_pattern(["He", " said", ' "', "hi", " there"], 3)


def test_classification_is_serial_and_fractions_pick_the_largest_explained_class():
    vocab = ["a", "b", "c", " (", ")", "d", "e", "f"]
    tokens = torch.tensor([
        [0, 1, 2, 0, 1, 5],  # k=3: a b ... a -> b   (induction)
        [5, 3, 6, 7, 4, 2],  # k=3: ( e f -> )       (dyck)
        [5, 6, 7, 5, 6, 2],  # k=1 attends to 0: span d e f; k=1 in row 3 has the same span (ngram)
        [5, 6, 7, 2, 2, 2],
        [7, 6, 5, 1, 0, 2],  # k=2: nothing           (unexplained)
    ])
    frame = pd.DataFrame({"head": "1:0", "sample": [0, 1, 2, 3, 4], "position": [3, 3, 1, 1, 2],
                          "max_attention": [1, 0, 0, 0, 2]})
    labels = classify_tokens_in_context(frame, tokens, vocab)
    assert labels.tolist() == ["induction", "dyck", "ngram", "ngram", "unexplained"]
    # the serial order: row 0 is also an n-gram candidate, but induction is tested first
    assert classify_tokens_in_context(frame.iloc[[0, 0]], tokens, vocab).tolist() == ["induction", "induction"]
    # with an attention test that fails, the induction row falls through
    moved = frame.assign(max_attention=[0, 0, 0, 0, 2])
    assert classify_tokens_in_context(moved, tokens, vocab)[0] != "induction"
    assert classify_tokens_in_context(moved, tokens, vocab, require_attention=False)[0] == "induction"
    fractions = pattern_fractions(frame, labels)
    assert fractions.loc["1:0", "ngram"] == pytest.approx(0.4) and fractions.loc["1:0", "class"] == "ngram"


def test_bad_arguments():
    model, tokens = _model(), _tokens()
    with pytest.raises(ValueError, match="kind"):
        ablation_hooks(model, "0:1", "resample")
    with pytest.raises(ValueError, match="means"):
        ablation_hooks(model, "0:1", "mean", None)
    with pytest.raises(ValueError, match="twice"):
        ablation_hooks(model, ["0:1", (0, 1)], "zero")
    with pytest.raises(ValueError, match="layer"):
        ablation_hooks(model, "1:0", "zero")
    with pytest.raises(ValueError, match="top_k"):
        tokens_in_context(model, tokens, "0:1", top_k=0)
    with pytest.raises(ValueError, match="positions"):
        ablated_per_token_loss(model, torch.zeros(2, 17, dtype=torch.long))


def test_cached_ablation_results_equal_the_plain_ones_and_are_keyed_by_weights_and_data(tmp_cache, monkeypatch):
    import stagewise.probes.ablation as A

    model, tokens, reference = _model(n_layers=2), _tokens(12), _tokens(8, seed=1)
    means = head_output_means(model, reference)
    scores = A.cached_per_head_icl_scores(model, tokens, 2, 12, ("1:0", "1:1"), reference=reference)
    assert scores == per_head_icl_scores(model, tokens, 2, 12, ("1:0", "1:1"), means=means)
    tic = A.cached_tokens_in_context(model, tokens, ["1:0", "1:2"], top_k=7, reference=reference)
    expected = pd.concat([tokens_in_context(model, tokens, h, top_k=7, means=means) for h in ("1:0", "1:2")],
                         ignore_index=True)
    pd.testing.assert_frame_equal(tic, expected)

    calls = []
    monkeypatch.setattr(A, "per_head_icl_scores", lambda *a, **k: calls.append(1) or {"none": 0.0})
    monkeypatch.setattr(A, "tokens_in_context", lambda *a, **k: calls.append(1) or expected.iloc[:0])
    assert A.cached_per_head_icl_scores(model, tokens, 2, 12, ("1:0", "1:1"), reference=reference) == scores
    pd.testing.assert_frame_equal(A.cached_tokens_in_context(model, tokens, ["1:0", "1:2"], 7, reference), tic)
    assert calls == []  # both loaded from the cache
    # other data, other weights, other settings: computed again
    A.cached_per_head_icl_scores(model, _tokens(12, seed=2), 2, 12, ("1:0", "1:1"), reference=reference)
    A.cached_per_head_icl_scores(_model(n_layers=2, seed=1), tokens, 2, 12, ("1:0", "1:1"), reference=reference)
    A.cached_per_head_icl_scores(model, tokens, 3, 12, ("1:0", "1:1"), reference=reference)
    A.cached_tokens_in_context(model, tokens, ["1:0", "1:2"], top_k=6, reference=reference)
    assert len(calls) == 3 + 2  # three ICL scores, two heads' tokens in context
