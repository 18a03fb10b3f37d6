import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from stagewise.probes.language import ngram_entropies, per_position_loss


def test_entropies_of_a_deterministic_cycle():
    # 0 1 2 3 0 1 2 3 ...: uniform unigrams (log 4), next token fully determined (0 nats)
    h = ngram_entropies(torch.arange(4).repeat(1000), d_vocab=10)
    assert h.unigram == pytest.approx(math.log(4), abs=1e-9)
    assert h.bigram == pytest.approx(0.0, abs=1e-9)


def test_entropies_of_iid_tokens():
    rng = np.random.default_rng(0)
    h = ngram_entropies(torch.from_numpy(rng.integers(0, 8, 200_000)), d_vocab=8)
    assert h.unigram == pytest.approx(math.log(8), abs=2e-3)
    assert h.bigram == pytest.approx(math.log(8), abs=2e-3)  # context does not help


def test_bad_streams():
    with pytest.raises(ValueError, match="d_vocab"):
        ngram_entropies(torch.tensor([0, 5, 12]), d_vocab=10)
    with pytest.raises(ValueError, match="at least 2"):
        ngram_entropies(torch.tensor([1]), d_vocab=10)


def test_per_position_loss_matches_the_mean_loss():
    from stagewise.models.language import LanguageModelConfig, lm_loss, make_language_model

    torch.manual_seed(0)
    model = make_language_model(LanguageModelConfig(n_layers=1, n_ctx=16, d_model=32, n_heads=4))
    tokens = torch.randint(0, 5000, (5, 16))
    per_pos = per_position_loss(model, tokens, batch_size=2)
    assert per_pos.shape == (15,)
    assert per_pos.mean().item() == pytest.approx(lm_loss(model, (tokens,)).item(), rel=1e-5)


# --- the per-checkpoint driver -------------------------------------------------------------------

from stagewise.probes import language as L  # noqa: E402

D_VOCAB, N_CTX = 60, 24
NGRAMS = {2: torch.arange(20).view(10, 2), 3: torch.arange(30).view(10, 3)}
SMALL = L.LMProbeConfig(num_validation=6, bigram_samples=40, ngram_sizes=(2, 3), ngram_count=10,
                        previous_token_sequences=24, previous_token_lengths=(6, 20), prefix_sequences=12,
                        prefix_length=24, batch_size=4)


def _checkpoints():
    from stagewise.models.language import LanguageModelConfig, make_language_model

    models = {}
    for step in (0, 10, 20):
        torch.manual_seed(step)
        models[step] = make_language_model(LanguageModelConfig(n_layers=2, n_ctx=N_CTX, d_model=32, n_heads=4,
                                                               d_vocab=D_VOCAB)).eval()
    return models


@pytest.fixture(scope="module")
def lm_data():
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, D_VOCAB - 1, (5000,), generator=g)
    val = torch.randint(0, D_VOCAB - 1, (8, N_CTX), generator=g)
    val[:, 0] = D_VOCAB - 1
    return val, L.bigram_distribution(stream, D_VOCAB)


def test_probe_row_agrees_with_the_single_probes(lm_data):
    val, bigrams = lm_data
    model = _checkpoints()[10]
    row = L.lm_probe_row(model, val, bigrams, SMALL, NGRAMS)
    v = val[:SMALL.num_validation]
    b = L.bigram_score(model, v, bigrams, SMALL.bigram_samples, seed=SMALL.seed)
    assert row["bigram.score"] == pytest.approx(b.score, rel=1e-6)
    assert row["bigram.optimum"] == pytest.approx(b.optimum, rel=1e-12)
    assert row["icl_score"] == pytest.approx(L.icl_score(model, v), rel=1e-6)  # (1, 12) at context 24
    ablation = L.positional_ablation_losses(model, v)
    for k in L.loss_positions(N_CTX):
        assert row[f"loss_at.{k}"] == pytest.approx(ablation.loc[k, "loss"], rel=1e-6)
        assert row[f"loss_at.{k}.pos_ablated"] == pytest.approx(ablation.loc[k, "loss_pos_ablated"], rel=1e-6)
    ngram = L.ngram_scores(model, v, NGRAMS)
    assert row["ngram.3.score"] == pytest.approx(ngram.loc[3, "score"], rel=1e-5)
    prev, cur, chance = L.previous_and_current_token_scores(model, 24, (6, 20), seed=SMALL.seed)
    assert row["previous_token.1:2"] == pytest.approx(prev[1, 2].item())
    assert row["current_token.0:3"] == pytest.approx(cur[0, 3].item())
    assert row["previous_token.chance"] == pytest.approx(chance)
    prefix, _, _ = L.prefix_matching_scores(model, 12, 24, seed=SMALL.seed + 1)
    assert row["prefix_matching.1:0"] == pytest.approx(prefix[1, 0].item())
    k = L.composition_scores(model, "K")
    assert row["K_composition.0:1->1:3"] == pytest.approx(k[1, 3].item())
    assert row["pos_pca.evr.1"] == pytest.approx(float(L.positional_embedding_pca(model).explained_variance_ratio[0]))


def test_probe_checkpoints_table_cache_and_determinism(lm_data, tmp_cache, monkeypatch):
    val, bigrams = lm_data
    models = _checkpoints()
    loads = []

    def load(step):
        loads.append(step)
        return models[step]

    table = L.lm_probe_checkpoints(load, [0, 10, 20], val, bigrams, SMALL, NGRAMS, progress=False)
    assert table["step"].tolist() == [0, 10, 20] and table.columns[0] == "step"
    assert table.shape[1] == 1 + len(L.lm_probe_row(models[0], val, bigrams, SMALL, NGRAMS))
    assert table["loss"].nunique() == 3  # different weights, different numbers
    assert len(list((tmp_cache / "lm-probes").glob("*/row.pt"))) == 3
    # a re-run reads every row from the cache: the probes are not evaluated again
    with monkeypatch.context() as patch:
        patch.setattr(L, "lm_probe_row", lambda *a, **k: pytest.fail("probes re-evaluated despite the cache"))
        again = L.lm_probe_checkpoints(load, [0, 10, 20], val, bigrams, SMALL, NGRAMS, progress=False)
    pd.testing.assert_frame_equal(table, again)
    assert loads == [0, 10, 20] * 2
    # other settings or other weights are other cache entries; without the cache: the same numbers
    fresh = L.lm_probe_checkpoints(load, [10], val, bigrams, SMALL, NGRAMS, cache=False, progress=False)
    pd.testing.assert_frame_equal(fresh, table.iloc[[1]].reset_index(drop=True))
    L.lm_probe_checkpoints(load, [10], val, bigrams, replace(SMALL, seed=1), NGRAMS, progress=False)
    assert len(list((tmp_cache / "lm-probes").glob("*/row.pt"))) == 4


def test_head_scores_and_composition_from_the_table(lm_data, tmp_cache):
    val, bigrams = lm_data
    model = _checkpoints()[20]
    table = L.lm_probe_checkpoints(lambda s: model, [20], val, bigrams, SMALL, NGRAMS, progress=False)
    heads = L.head_scores_at(table, 20)
    assert heads.index.tolist() == [f"{l}:{h}" for l in range(2) for h in range(4)]
    assert heads.loc["1:2", "previous_token"] == pytest.approx(table.loc[0, "previous_token.1:2"])
    assert heads.attrs["chance"]["prefix_matching"] == pytest.approx(table.loc[0, "prefix_matching.chance"])
    assert set(L.classify_heads(heads)) <= set(L.HEAD_TYPES)
    comp = L.composition_at(table, 20, "V")
    np.testing.assert_allclose(comp.to_numpy(), L.composition_scores(model, "V").numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="step"):
        L.head_scores_at(table, 30)


def test_probe_settings_bad_inputs(lm_data):
    val, bigrams = lm_data
    model = _checkpoints()[0]
    with pytest.raises(ValueError, match="bigram_samples"):
        L.LMProbeConfig(bigram_samples=0)
    with pytest.raises(ValueError, match="previous_token_lengths"):
        L.LMProbeConfig(previous_token_lengths=(30, 20))
    with pytest.raises(ValueError, match="ngram_sizes"):
        L.LMProbeConfig(ngram_sizes=(1, 2))
    with pytest.raises(ValueError, match="composition_layer_norm"):
        L.LMProbeConfig(composition_layer_norm="centre")
    with pytest.raises(ValueError, match="prefix_length"):
        L.lm_probe_row(model, val, bigrams, replace(SMALL, prefix_length=128), NGRAMS)
    with pytest.raises(ValueError, match="num_validation"):
        L.lm_probe_row(model, val, bigrams, replace(SMALL, num_validation=9), NGRAMS)
    with pytest.raises(ValueError, match="loss_positions"):
        L.lm_probe_row(model, val, bigrams, replace(SMALL, loss_positions=(1, 24)), NGRAMS)
    with pytest.raises(ValueError, match="ngrams"):
        L.lm_probe_row(model, val, bigrams, SMALL, {24: torch.zeros(3, 24, dtype=torch.long)})
    with pytest.raises(ValueError, match="steps"):
        L.lm_probe_checkpoints(lambda s: model, [], val, bigrams, SMALL, NGRAMS)
    with pytest.raises(ValueError, match="profile_name"):
        L.lm_probe_config("laptop")
    assert L.lm_probe_config("smoke", seed=3).seed == 3


def test_token_loss_change_figure(tmp_path):
    from stagewise.plotting import plot_token_loss_change, save_figure

    tokens = ["<|endoftext|>", "The", " cat", " sat", "\n", "on", " the", " $mat$"]
    change = [np.nan, -2.0, 0.5, 2.0, 0.0, -0.1, 0.0, 1.0]
    fig = plot_token_loss_change(tokens, change, width=12)
    ax = fig.axes[0]
    faces = [p.get_facecolor() for p in ax.patches]
    assert len(faces) == 7  # every token but the first (NaN) gets a background
    assert faces[0][0] > faces[0][2] + 0.2  # "The": loss fell by 2 nats -> red
    assert faces[2][2] > faces[2][0] + 0.2  # " sat": rose by 2 -> blue
    texts = [t.get_text() for t in ax.texts]
    assert texts[4] == "\u21b5" and " $mat$" in texts  # newline shown and breaking the line; no mathtext
    rows = {t.get_text(): t.get_position()[1] for t in ax.texts}
    assert rows["on"] > rows[" cat"]  # after the newline, a new row (y grows downwards)
    assert all(p.exists() for p in save_figure(fig, "fig5_test", directory=tmp_path))
    with pytest.raises(ValueError, match="change"):
        plot_token_loss_change(tokens, change[:-1])
