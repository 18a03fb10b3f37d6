"""Behavioural language probes (App. B.3, B.4.1, Fig. 5) against known answers.

The reference model is a hand-built "bigram model": attention outputs zero, embedding and
unembedding set so that its logits are exactly log q̃(·|t_k) of a given bigram table.
"""

import math

import numpy as np
import pytest
import torch

from stagewise.models.language import LanguageModelConfig, make_language_model
from stagewise.probes import language as L

V = 6


def _markov_stream(n: int = 60_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(V, 0.7), size=V)
    ids = np.empty(n, dtype=np.int64)
    ids[0] = 0
    u = rng.random(n)
    cdf = transition.cumsum(1)
    for i in range(1, n):
        ids[i] = min(np.searchsorted(cdf[ids[i - 1]], u[i]), V - 1)
    return torch.from_numpy(ids)


def bigram_model(table: np.ndarray | None, n_ctx: int = 16):
    """Logits = log table[t_k] (uniform if table is None): d_model = 2V, ±-coded embedding."""
    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=1, n_ctx=n_ctx, d_model=2 * V, n_heads=2, d_vocab=V))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.blocks[0].ln1.w.fill_(1.0)
        model.ln_final.w.fill_(1.0)
        for t in range(V):
            model.W_E[t, t], model.W_E[t, V + t] = 1.0, -1.0
        if table is not None:
            # ln_final scales the ±1 embedding by sqrt(d_model / 2) = sqrt(V)
            model.W_U[:V] = torch.from_numpy(np.log(table)).float() / math.sqrt(V)
        model.W_pos.normal_()  # present but unused (attention writes nothing)
    return model.eval()


@pytest.fixture(scope="module")
def stream():
    return _markov_stream()


@pytest.fixture(scope="module")
def bigrams(stream):
    return L.bigram_distribution(stream, V)


def _contexts(stream, n_ctx=16, n=20, offset=1000):
    return stream[offset:offset + n * n_ctx].view(n, n_ctx).long()


def test_bigram_distribution_from_counts():
    q = L.bigram_distribution(torch.tensor([0, 1, 0, 2, 0, 1, 3]), d_vocab=5)
    dense = q.dense()
    np.testing.assert_allclose(dense[0], [0, 2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(dense[1], [0.5, 0, 0, 0.5, 0])
    np.testing.assert_allclose(dense[2], [1, 0, 0, 0, 0])
    assert q.has_successor.tolist() == [True, True, True, False, False]
    assert q.entropy[0] == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert q.entropy[2] == 0.0 and np.isnan(q.entropy[3])
    with pytest.raises(ValueError, match="d_vocab"):
        L.bigram_distribution(torch.tensor([0, 7]), d_vocab=5)


def test_bigram_cross_entropy_matches_dense_computation(bigrams):
    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(50, V, generator=g), -1)
    current = torch.randint(0, V, (50,), generator=g)
    expected = -(torch.from_numpy(bigrams.dense())[current] * log_probs.double()).sum(1)
    torch.testing.assert_close(L.bigram_cross_entropy(log_probs, current, bigrams), expected)


def test_bigram_score_is_optimal_for_the_bigram_model(stream, bigrams):
    tokens = _contexts(stream)
    best = L.bigram_score(bigram_model(bigrams.dense()), tokens, bigrams, num_samples=200, seed=1)
    # eq. (11) with p = q̃ is the entropy of q̃(·|t_k): the optimum
    assert best.score == pytest.approx(best.optimum, abs=1e-4)
    assert best.num_samples == 200
    # any other predictor is worse (Gibbs' inequality); the uniform one scores log V exactly
    uniform = L.bigram_score(bigram_model(None), tokens, bigrams, num_samples=200, seed=1)
    assert uniform.score == pytest.approx(math.log(V), abs=1e-5)
    noisy = np.exp(np.log(bigrams.dense()) + np.random.default_rng(1).normal(0, 0.5, (V, V)))
    worse = L.bigram_score(bigram_model(noisy / noisy.sum(1, keepdims=True)), tokens, bigrams, 200, seed=1)
    assert worse.score > best.score + 0.01
    assert uniform.optimum == best.optimum  # same seed, same positions


def test_bigram_score_bad_inputs(stream, bigrams):
    model, tokens = bigram_model(None), _contexts(stream)
    with pytest.raises(ValueError, match="num_samples"):
        L.bigram_score(model, tokens, bigrams, num_samples=10_000)
    with pytest.raises(ValueError, match="num_samples"):
        L.bigram_score(model, tokens, bigrams, num_samples=0)
    with pytest.raises(ValueError, match="d_vocab"):
        L.bigram_score(model, tokens, L.bigram_distribution(stream, V + 1))
    with pytest.raises(ValueError, match="n_ctx"):
        L.bigram_score(model, stream[:40].view(1, 40), bigrams)


def test_ngram_scores_of_the_bigram_model(stream, bigrams):
    q = bigrams.dense()
    model, tokens = bigram_model(q), _contexts(stream)
    g = torch.Generator().manual_seed(0)
    ngrams = {2: torch.randint(0, V, (30, 2), generator=g), 3: torch.randint(0, V, (30, 3), generator=g)}
    table = L.ngram_scores(model, tokens, ngrams, bos_id=V - 1)
    t = tokens.numpy()
    for n, grams in ngrams.items():
        # the bigram model sees only the current token: ℓ_gram = mean -log q̃(g_n | g_{n-1})
        gram = -np.log(q[grams[:, -2].numpy(), grams[:, -1].numpy()]).mean()
        test = -np.log(q[t[:, n - 1], t[:, n]]).mean()  # loss at token n
        assert table.loc[n, "loss_gram"] == pytest.approx(gram, abs=1e-4)
        assert table.loc[n, "loss_test"] == pytest.approx(test, abs=1e-4)
        assert table.loc[n, "score"] == pytest.approx(test / gram, rel=1e-4)
    with pytest.raises(ValueError, match="ngrams"):
        L.ngram_scores(model, tokens, {3: ngrams[2]})


def test_common_ngrams_are_the_gpt2_vocabulary_in_order():
    from stagewise.data.tokenizer import gpt2_vocabulary, gpt2_vocabulary_ngrams, load_tokenizer

    tri = L.common_ngrams(3, 1000)
    assert tri.shape == (1000, 3)
    assert tri.tolist() == gpt2_vocabulary_ngrams(n=3, count=1000)
    # the first 2-gram is the first GPT-2 token the 5k tokenizer splits in two: GPT-2 id 4,999, the
    # first one cut (id 4,999 is BOS in the 5k vocabulary)
    vocab, tok = gpt2_vocabulary(), load_tokenizer()
    assert tok.decode(L.common_ngrams(2, 1)[0].tolist()) == vocab[4999] == " confirmed"
    # every 3-gram spells a GPT-2 token
    assert set(tok.decode(g) for g in tri.tolist()) <= set(vocab)
    with pytest.raises(ValueError, match="n must"):
        L.common_ngrams(1)
    with pytest.raises(ValueError, match="count"):
        L.common_ngrams(8, 1000)  # only ~29 8-grams exist


def test_positional_ablation_equals_zeroing_the_positional_embedding():
    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=2, n_ctx=16, d_model=32, n_heads=4, d_vocab=50)).eval()
    with torch.no_grad():
        model.W_pos.normal_(0, 1.0)
    tokens = torch.randint(0, 50, (6, 16))
    plain = L.position_losses(model, tokens)
    ablated = L.position_losses(model, tokens, ablate_positional=True)
    assert (plain - ablated).abs().max() > 1e-3  # this model uses position
    with torch.no_grad():
        model.W_pos.zero_()
    torch.testing.assert_close(ablated, L.position_losses(model, tokens))  # ablation == no positional embedding
    table = L.positional_ablation_losses(model, tokens, positions=[1, 5, 15])
    assert table.index.tolist() == [1, 5, 15]
    np.testing.assert_array_equal(table["difference"].to_numpy(), 0.0)
    with pytest.raises(ValueError, match="positions"):
        L.positional_ablation_losses(model, tokens, positions=[16])


def test_loss_positions_and_icl_tokens_rules():
    assert L.loss_positions(1024) == L.PAPER_LOSS_POSITIONS
    assert L.loss_positions(256) == (1, 2, 3, 5, 10, 20, 30, 50, 100, 200)
    assert L.icl_tokens(1024) == (50, 500)
    assert L.icl_tokens(256) == (13, 125)
    assert L.icl_tokens(32) == (2, 16)
    assert L.icl_tokens(4) == (1, 2)
    with pytest.raises(ValueError, match="n_ctx"):
        L.icl_tokens(3)


def test_icl_score_from_losses_and_bad_tokens(stream, bigrams):
    model, tokens = bigram_model(bigrams.dense()), _contexts(stream)
    losses = L.position_losses(model, tokens)
    assert L.icl_score(model, tokens) == pytest.approx(float((losses[:, 7] - losses[:, 0]).mean()))  # (1, 8) at 16
    assert L.icl_score(losses=losses, k1=3, k2=9) == pytest.approx(float((losses[:, 8] - losses[:, 2]).mean()))
    with pytest.raises(ValueError, match="k2"):
        L.icl_score(losses=losses, k1=3, k2=16)
    with pytest.raises(ValueError, match="smaller"):
        L.icl_score(losses=losses, k1=9, k2=3)


def test_icl_score_window_averages_around_each_token_and_reports_its_error():
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(40, 20, generator=g, dtype=torch.float64)
    # window 2 around k1 = 3 covers tokens 1..5, around k2 = 19 tokens 17..20 (clipped at the end)
    expected = losses[:, 16:20].mean(1) - losses[:, 0:5].mean(1)
    score, sem = L.icl_score(losses=losses, k1=3, k2=19, window=2, return_sem=True)
    assert score == pytest.approx(float(expected.mean()))
    assert sem == pytest.approx(float(expected.std() / 40 ** 0.5))
    assert L.icl_score(losses=losses, k1=3, k2=19, window=0) == pytest.approx(float((losses[:, 18] - losses[:, 2]).mean()))
    with pytest.raises(ValueError, match="window"):
        L.icl_score(losses=losses, k1=3, k2=19, window=-1)
    with pytest.raises(ValueError, match="icl_window"):
        L.LMProbeConfig(icl_window=-2)


def test_per_token_loss_change(stream, bigrams):
    q = bigrams.dense()
    tokens = stream[:16].long()
    table = L.per_token_loss_change(bigram_model(None), bigram_model(q), tokens)
    assert np.isnan(table.loc[0, "change"])
    t = tokens.numpy()
    expected = -np.log(q[t[:-1], t[1:]]) - math.log(V)  # bigram model vs uniform
    np.testing.assert_allclose(table["change"].to_numpy()[1:], expected, atol=1e-4)
    assert table["token"].tolist() == L.token_strings(tokens)
    with pytest.raises(ValueError, match="one sequence"):
        L.per_token_loss_change(bigram_model(None), bigram_model(q), tokens.view(2, 8))


def test_bigram_positions_are_distinct_and_skip_bos(stream, bigrams):
    from stagewise.probes.language_ngrams import _sample_positions

    tokens = _contexts(stream)
    samples = _sample_positions(tokens, bigrams, 150, seed=3)
    assert samples[:, 1].min() >= 1 and samples[:, 1].max() <= 14  # k in 1 .. T-2
    assert len({tuple(s) for s in samples.tolist()}) == 150
    assert torch.equal(samples, _sample_positions(tokens, bigrams, 150, seed=3))
    assert not torch.equal(samples, _sample_positions(tokens, bigrams, 150, seed=4))
