"""RepeatMix: repeated-text contexts mixed into the LM batch stream (stagewise.data.language)."""

from dataclasses import dataclass, field

import pytest
import torch

from stagewise.cache import HASH_OMIT_DEFAULT, config_hash
from stagewise.data.language import LMBatches, RepeatMix, pack_contexts

BOS = 99


def _contexts(n_ctx=12, n=40, seed=0):
    stream = torch.randint(0, BOS, (n * (n_ctx - 1),), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    return pack_contexts(stream, n_ctx, BOS)


def _rewritten(mixed, plain):
    return (mixed != plain).any(dim=1)


def test_fraction_of_rewritten_contexts_matches_the_setting():
    tokens = _contexts()
    plain = LMBatches(tokens, 8, seed=1)
    mixed = LMBatches(tokens, 8, seed=1, repeat_mix=RepeatMix(fraction=0.25, source="random", vocab_size=100))
    hits = torch.cat([_rewritten(mixed(s)[0], plain(s)[0]) for s in range(500)])
    # 4,000 Bernoulli(0.25) draws: sd 0.0068; a random S equal to the original has probability ~0
    assert abs(hits.float().mean().item() - 0.25) < 0.03
    assert torch.equal(LMBatches(tokens, 8, seed=1, repeat_mix=RepeatMix(fraction=0.0))(7)[0], plain(7)[0])


@pytest.mark.parametrize("n_ctx", [12, 13])
def test_natural_repeat_is_bos_then_the_contexts_own_first_half_twice(n_ctx):
    tokens = _contexts(n_ctx)
    plain = LMBatches(tokens, 8, seed=0)
    mixed = LMBatches(tokens, 8, seed=0, repeat_mix=RepeatMix(fraction=0.5))
    h = (n_ctx - 1) // 2
    seen = 0
    for step in range(20):
        a, b = mixed(step)[0], plain(step)[0]
        assert a.dtype == torch.long and torch.all(a[:, 0] == BOS)
        for row_a, row_b in zip(a, b):
            repeated = torch.equal(row_a[1:1 + h], row_b[1:1 + h]) and torch.equal(row_a[1 + h:1 + 2 * h], row_b[1:1 + h])
            assert repeated or torch.equal(row_a, row_b)  # rewritten exactly, or untouched
            if not torch.equal(row_a, row_b):
                seen += 1
                assert torch.equal(row_a[1 + 2 * h:], row_b[1 + 2 * h:])  # odd body: last token kept
    assert 40 < seen < 120  # ~80 of 160


def test_random_repeat_uses_non_bos_tokens_in_the_vocabulary_and_repeats_exactly():
    tokens = _contexts(n_ctx=21)
    mix = RepeatMix(fraction=1.0, source="random", seed=5, vocab_size=100)
    batch = LMBatches(tokens, 8, seed=0, repeat_mix=mix)(3)[0]
    h = 10
    assert torch.all(batch[:, 0] == BOS)
    assert torch.equal(batch[:, 1:1 + h], batch[:, 1 + h:1 + 2 * h])
    body = batch[:, 1:]
    assert body.min() >= 0 and body.max() < 100 and not (body == BOS).any()
    # rows differ from each other (independent segments), and cover most of the vocabulary over steps
    assert len({tuple(r.tolist()) for r in batch[:, 1:1 + h]}) == 8
    many = torch.cat([LMBatches(tokens, 8, repeat_mix=mix)(s)[0][:, 1:] for s in range(20)])
    assert len(torch.unique(many)) >= 95  # 99 allowed ids, 3,200 draws


def test_mixing_is_a_function_of_seed_and_step():
    tokens = _contexts()
    mix = RepeatMix(fraction=0.3, source="random", seed=2, vocab_size=100)
    a, b = LMBatches(tokens, 8, repeat_mix=mix), LMBatches(tokens, 8, repeat_mix=mix)
    for step in (0, 17, 5, 17):  # any order, fresh object: the same batch (a resumed run)
        assert torch.equal(a(step)[0], b(step)[0])
    other = LMBatches(tokens, 8, repeat_mix=RepeatMix(fraction=0.3, source="random", seed=3, vocab_size=100))
    assert any(not torch.equal(a(s)[0], other(s)[0]) for s in range(10))


def test_default_mix_leaves_a_profile_hash_unchanged():
    @dataclass(frozen=True)
    class Before:
        batch_size: int = 8

    @dataclass(frozen=True)
    class Before2:  # the same profile with the mix field added
        batch_size: int = 8
        repeat_mix: RepeatMix = field(default_factory=RepeatMix, metadata=HASH_OMIT_DEFAULT)

    Before2.__name__ = "Before"
    assert config_hash(Before2()) == config_hash(Before())
    assert config_hash(Before2(repeat_mix=RepeatMix(fraction=0.1))) != config_hash(Before())


@pytest.mark.parametrize("kwargs,name", [({"fraction": 1.5}, "fraction"), ({"fraction": -0.1}, "fraction"),
                                         ({"source": "copy"}, "source"), ({"vocab_size": 1}, "vocab_size")])
def test_bad_repeat_mix_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RepeatMix(**kwargs)


def test_random_segment_needs_bos_inside_the_vocabulary():
    mix = RepeatMix(fraction=1.0, source="random", vocab_size=50)
    with pytest.raises(ValueError, match="vocab_size"):
        LMBatches(_contexts(), 4, repeat_mix=mix)(0)
