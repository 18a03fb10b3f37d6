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


def _repeats_in(row, lo, hi, min_len):
    """(length, first, second) of the longest span row[a:a+L] == row[b:b+L], b >= a + L, within [lo, hi)."""
    best = (0, None, None)
    r = row.tolist()
    for a in range(lo, hi):
        for b in range(a + 1, hi):
            n = 0
            while b + n < hi and a + n < b and r[a + n] == r[b + n]:
                n += 1
            if n >= min_len and n > best[0]:
                best = (n, a, b)
    return best


def test_segments_layout_repeats_each_chunks_segment_at_a_varying_distance():
    n_ctx, segments = 65, 2
    tokens = _contexts(n_ctx=n_ctx, n=40)
    mix = RepeatMix(fraction=1.0, source="random", seed=3, vocab_size=5000, layout="segments", segments=segments,
                    min_length=4, max_length=8, background="random")
    c = mix.chunk_length(n_ctx)
    distances = set()
    for step in range(3):
        batch = LMBatches(tokens, 8, seed=0, repeat_mix=mix)(step)[0]
        assert torch.all(batch[:, 0] == BOS) and not (batch[:, 1:] == BOS).any()
        for row in batch:
            for k in range(segments):
                lo = 1 + k * c
                length, a, b = _repeats_in(row, lo, lo + c, 3)
                # uniform tokens over 5k ids repeat by chance with probability ~1e-4 per pair: the
                # longest repeat is the written segment, whole, inside its chunk
                assert 4 <= length <= 8 and b >= a + length and b + length <= lo + c
                distances.add(b - a)
    assert len(distances) > 10  # random offsets, not a fixed one


def test_segments_on_natural_background_copy_the_contexts_own_text_and_keep_the_rest():
    n_ctx = 41
    tokens = _contexts(n_ctx=n_ctx, n=40)
    plain = LMBatches(tokens, 8, seed=0)
    mix = RepeatMix(fraction=1.0, source="natural", seed=1, vocab_size=100, layout="segments", segments=1,
                    min_length=5, max_length=5)
    a, b = LMBatches(tokens, 8, seed=0, repeat_mix=mix)(2)[0], plain(2)[0]
    for row_a, row_b in zip(a, b):
        changed = torch.nonzero(row_a != row_b).flatten()
        assert len(changed) <= 5 and (len(changed) == 0 or changed.max() - changed.min() < 5)
        # the overwritten span now holds 5 tokens that also stand, unchanged, earlier in the context
        length, first, second = _repeats_in(row_a, 1, n_ctx, 5)
        assert length >= 5 and torch.equal(row_a[first:first + 5], row_b[first:first + 5])


def test_unigram_source_draws_from_the_batchs_own_tokens():
    n_ctx = 33
    stream = torch.randint(0, 10, (40 * (n_ctx - 1),), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    tokens = pack_contexts(stream, n_ctx, BOS)  # text over ids 0..9 only
    mix = RepeatMix(fraction=1.0, source="unigram", vocab_size=100, layout="segments", segments=2, min_length=4,
                    max_length=8, background="random")
    batch = LMBatches(tokens, 8, seed=0, repeat_mix=mix)(0)[0]
    c = mix.chunk_length(n_ctx)
    for row in batch:
        length, a, b = _repeats_in(row, 1, 1 + c, 4)
        assert length >= 4 and row[a:a + length].max() < 10  # unigram draws come from the text's ids


def test_segments_that_do_not_fit_name_the_parameters():
    mix = RepeatMix(fraction=1.0, layout="segments", segments=4, max_length=20)
    with pytest.raises(ValueError, match="max_length"):
        mix.apply(_contexts(n_ctx=65), 0)
    for kwargs, word in [({"layout": "thirds"}, "layout"), ({"segments": 0}, "segments"),
                         ({"min_length": 9, "max_length": 8}, "min_length"), ({"background": "x"}, "background"),
                         ({"source": "zipf"}, "source")]:
        with pytest.raises(ValueError, match=word):
            RepeatMix(**kwargs)


def test_new_fields_leave_old_cache_keys_alone():
    assert config_hash(RepeatMix(fraction=0.1)) == config_hash(RepeatMix(fraction=0.1, layout="halves", segments=1))
    assert config_hash(RepeatMix(fraction=0.1)) != config_hash(RepeatMix(fraction=0.1, layout="segments"))


def test_token_pool_restricts_random_segments_to_the_lowest_ids():
    tokens = _contexts(n_ctx=33, n=40)
    mix = RepeatMix(fraction=1.0, source="random", vocab_size=100, layout="segments", segments=2, min_length=4,
                    max_length=8, token_pool=10)
    plain, batch = LMBatches(tokens, 8, seed=0)(1)[0], LMBatches(tokens, 8, seed=0, repeat_mix=mix)(1)[0]
    written = batch[batch != plain]
    assert len(written) > 0 and written.max() < 10
    with pytest.raises(ValueError, match="token_pool"):
        RepeatMix(token_pool=1)
    with pytest.raises(ValueError, match="token_pool"):
        RepeatMix(token_pool=6000)


def test_scatter_layout_places_non_overlapping_pairs_at_spread_distances():
    n_ctx = 97
    tokens = _contexts(n_ctx=n_ctx, n=40)
    mix = RepeatMix(fraction=1.0, source="random", seed=4, vocab_size=5000, layout="scatter", segments=3,
                    min_length=5, max_length=8, background="random")
    distances = []
    for step in range(4):
        for row in LMBatches(tokens, 8, seed=0, repeat_mix=mix)(step)[0]:
            r = row.tolist()
            # every 5-gram that occurs twice is part of a written pair (chance repeats: ~0 at 5k ids)
            seen = {}
            for i in range(1, n_ctx - 4):
                key = tuple(r[i:i + 5])
                if key in seen and i - seen[key] >= 5:
                    distances.append(i - seen[key])
                seen.setdefault(key, i)
    assert len(distances) > 0
    assert max(distances) > 40 and min(distances) < 20  # spread over the context, not one offset
    with pytest.raises(ValueError, match="copies \\* segments \\* max_length"):
        RepeatMix(fraction=1.0, layout="scatter", segments=4, max_length=16).apply(_contexts(n_ctx=128), 0)


def test_scatter_writes_each_segment_the_requested_number_of_times():
    n_ctx = 129
    tokens = _contexts(n_ctx=n_ctx, n=40)
    mix = RepeatMix(fraction=1.0, source="random", seed=2, vocab_size=5000, layout="scatter", segments=2, copies=4,
                    min_length=6, max_length=6, background="random")
    counts = []
    for row in LMBatches(tokens, 8, seed=0, repeat_mix=mix)(0)[0]:
        r = row.tolist()
        grams = {}
        for i in range(1, n_ctx - 5):
            grams[tuple(r[i:i + 6])] = grams.get(tuple(r[i:i + 6]), 0) + 1
        counts.append(sorted(c for c in grams.values() if c > 1))
    assert all(c == [4, 4] for c in counts)  # two segments, four copies each, in every context
    with pytest.raises(ValueError, match="copies"):
        RepeatMix(copies=1)


def test_curriculum_batches_switch_from_short_to_long_contexts_with_as_many_tokens():
    from stagewise.data.language import ContextCurriculum, CurriculumBatches

    short, long_ = _contexts(n_ctx=9, n=80), _contexts(n_ctx=33, n=40)
    warm = LMBatches(short, 16, seed=1, repeat_mix=RepeatMix(fraction=1.0, source="natural", layout="scatter",
                                                               segments=1, copies=2, min_length=2, max_length=3))
    main = LMBatches(long_, 4, seed=1)
    batches = CurriculumBatches(warm, main, steps=5)
    assert batches(4)[0].shape == (16, 9) and batches(5)[0].shape == (4, 33)
    assert torch.equal(batches(4)[0], warm(4)[0]) and torch.equal(batches(7)[0], main(7)[0])
    with pytest.raises(ValueError, match="steps"):
        CurriculumBatches(warm, main, steps=0)
    with pytest.raises(ValueError, match="n_ctx"):
        ContextCurriculum(steps=10, n_ctx=2)


def test_long_language_profile_names_its_analogue_data_and_keeps_the_cpu_key():
    import dataclasses

    from stagewise.cache import config_hash
    from stagewise.data.language import ContextCurriculum
    from stagewise.profiles import get_profile
    from stagewise.runs import _language_key

    cpu, long_ = get_profile("language", "cpu"), get_profile("language", "long")
    assert cpu.analogue == "" and "analogue data" in long_.analogue and "random offsets" in long_.analogue
    assert "context 32" in long_.analogue
    # the analogue fields enter the run's key only when used: the cpu run's key is the one it had
    # before they existed (the same dataclass without them)
    from stagewise.runs import LanguageRunKey as Now

    @dataclass(frozen=True)
    class LanguageRunKey:  # noqa: F811 (the old definition, by name: the name is part of the hash)
        model: object
        train: object
        batch_size: int
        data_seed: int
        corpus: object
        tokenizer: str
        train_model: str = field(default="transformer_lens", metadata=HASH_OMIT_DEFAULT)

    key = _language_key(cpu)
    old = LanguageRunKey(*(getattr(key, f.name) for f in dataclasses.fields(LanguageRunKey)))
    assert isinstance(key, Now) and config_hash(key) == config_hash(old)
    assert config_hash(_language_key(long_)) != config_hash(
        _language_key(dataclasses.replace(long_, repeat_mix=RepeatMix())))
    with pytest.raises(ValueError, match="curriculum"):
        dataclasses.replace(long_, curriculum=ContextCurriculum(steps=100, n_ctx=128))
