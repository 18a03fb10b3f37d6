"""The 5k truncated GPT-2 tokenizer (App. D.1.2) and the GPT-2 vocabulary n-grams (App. B.2)."""

import json
import math

import pytest

from stagewise.data.corpus import SAMPLE_CORPUS
from stagewise.data.tokenizer import (
    BOS_TOKEN,
    TOKENIZER_DIR,
    VOCAB_SIZE,
    build_truncated_gpt2,
    gpt2_vocabulary,
    gpt2_vocabulary_ngrams,
    load_hf_tokenizer,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_vocabulary_is_5000_with_bos_last(tok):
    assert VOCAB_SIZE == 5000 and tok.get_vocab_size() == 5000
    assert tok.token_to_id(BOS_TOKEN) == 4999
    assert max(tok.get_vocab().values()) == 4999
    assert tok.encode("a").ids[0] == 4999  # encode() prepends BOS like a model input


def test_common_words_get_their_gpt2_ids(tok):
    # GPT-2 ids (encoder.json): " the" 262, " cat" 3797, " sat" 3332, " on" 319, "." 13, " world" 995
    assert tok.encode(" the cat sat on the mat.", add_special_tokens=False).ids == [262, 3797, 3332, 319, 262, 2603, 13]
    assert tok.encode(" world", add_special_tokens=False).ids == [995]
    # " Hello" is GPT-2 id 18435 > 4999, so truncation must split it into kept pieces
    pieces = tok.encode(" Hello", add_special_tokens=False)
    assert len(pieces.ids) > 1 and all(i < 4999 for i in pieces.ids)


def test_truncation_agrees_with_full_gpt2_where_full_gpt2_uses_kept_tokens(tok):
    full = build_truncated_gpt2(vocab_size=50257)  # the untruncated GPT-2 BPE
    assert full.token_to_id(BOS_TOKEN) == 50256
    texts = [" the man went to the house and said that he was not there", " It was a time of great change in the world."]
    for text in texts:
        ids = full.encode(text, add_special_tokens=False).ids
        assert max(ids) < 4999
        assert tok.encode(text, add_special_tokens=False).ids == ids


def test_committed_tokenizer_is_the_one_the_builder_makes(tok):
    built = json.loads(build_truncated_gpt2().to_str())
    committed = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    assert built["model"]["vocab"] == committed["model"]["vocab"]
    assert built["model"]["merges"] == committed["model"]["merges"]
    assert len(committed["model"]["merges"]) == 4999 - 256  # merge i makes token 256 + i


def test_round_trip_on_real_text(tok):
    rows = [json.loads(line) for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[:10]]
    for row in rows:
        ids = tok.encode(row["text"], add_special_tokens=False).ids
        assert tok.decode(ids) == row["text"]
    odd = "naïve café — “quotes”, 3.14159, tabs\tand\nnewlines 😀"
    assert tok.decode(tok.encode(odd, add_special_tokens=False).ids) == odd


def test_transformers_loads_the_same_tokenizer(tok):
    hf = load_hf_tokenizer()
    assert len(hf) == 5000 and hf.bos_token_id == 4999
    assert hf("The cat sat.").input_ids == tok.encode("The cat sat.").ids


def test_gpt2_vocabulary_ngrams_follow_the_papers_definition(tok):
    vocab = gpt2_vocabulary()
    assert len(vocab) == 50257 and vocab[262] == " the" and vocab[50256] == BOS_TOKEN
    ngrams = gpt2_vocabulary_ngrams(tok)
    assert len(ngrams) == 50256
    # the first 4,999 GPT-2 tokens are kept, so they are 1-grams of themselves
    assert all(g == [i] for i, g in enumerate(ngrams[:4999]))
    for n in (2, 3):
        common = gpt2_vocabulary_ngrams(tok, n=n)
        assert len(common) == 1000 and all(len(g) == n for g in common)
        first = next(g for g in ngrams if len(g) == n)
        assert common[0] == first
    # an n-gram decodes back to the GPT-2 token it came from
    i = ngrams.index(common[0])
    assert tok.decode(common[0]) == vocab[i]


def test_bad_vocab_size_is_rejected_by_name():
    with pytest.raises(ValueError, match="vocab_size"):
        build_truncated_gpt2(vocab_size=100)
    with pytest.raises(ValueError, match="n must be"):
        gpt2_vocabulary_ngrams(n=0)
