import math

import numpy as np
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
