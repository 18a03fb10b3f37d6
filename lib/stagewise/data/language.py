"""Token streams, BOS-prefixed contexts and step-indexed batches for the language models (§5, D.1).

The paper's data is a collection of length-``K`` contexts ``{S_K^i}`` (§5) with ``K = 1024``,
each beginning with the BOS token (the prefix-matching and ICL probes assume position 0 is BOS).
Here documents are tokenised with the 5k tokenizer, joined into one stream with BOS between
documents, cut into pieces of ``K - 1`` tokens, and BOS is prepended to each piece.

:class:`LMBatches` is the training loop's ``batch_fn``: ``batch_fn(step)`` is a deterministic
function of the step (an epoch-seeded permutation of the contexts), so a resumed run sees the
same batches as an uninterrupted one. :class:`RepeatMix` optionally rewrites a fraction of the
contexts as ``BOS + S + S`` (a repeated segment; our addition, not the paper's data).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from stagewise.cache import artifact_dir, atomic_save, load_artifact
from stagewise.data.corpus import SPLITS, CorpusConfig, check_corpus_source, check_train_tokens, load_corpus
from stagewise.data.tokenizer import BOS_TOKEN, TOKENIZER_DIR, load_tokenizer

__all__ = ["tokenize_documents", "pack_contexts", "load_token_stream", "load_contexts", "RepeatMix", "LMBatches"]

log = logging.getLogger(__name__)


def tokenize_documents(texts: list[str], tokenizer=None, chunk: int = 512, progress: bool = True) -> Tensor:
    """One int32 stream ``[BOS, doc_1, BOS, doc_2, ...]`` of the documents' token ids."""
    tokenizer = tokenizer or load_tokenizer()
    bos = tokenizer.token_to_id(BOS_TOKEN)
    if bos is None:
        raise ValueError(f"tokenizer has no BOS token {BOS_TOKEN!r}")
    if not texts:
        raise ValueError("texts is empty: nothing to tokenize")
    pieces = []
    for start in tqdm(range(0, len(texts), chunk), desc="tokenize", disable=not progress, unit="chunk"):
        for enc in tokenizer.encode_batch(list(texts[start:start + chunk]), add_special_tokens=False):
            pieces.append(np.array([bos], dtype=np.int32))
            pieces.append(np.asarray(enc.ids, dtype=np.int32))
    return torch.from_numpy(np.concatenate(pieces))


def pack_contexts(stream: Tensor, n_ctx: int, bos_id: int) -> Tensor:
    """Cut ``stream`` into ``N = len // (n_ctx - 1)`` pieces and prepend BOS: shape ``[N, n_ctx]``.

    The tail shorter than ``n_ctx - 1`` tokens is dropped.
    """
    if not isinstance(n_ctx, int) or n_ctx < 2:
        raise ValueError(f"n_ctx must be an integer >= 2, got {n_ctx!r}")
    if stream.dim() != 1:
        raise ValueError(f"stream must be 1-dimensional, got shape {tuple(stream.shape)}")
    body = n_ctx - 1
    n = stream.numel() // body
    if n == 0:
        raise ValueError(f"stream of {stream.numel()} tokens is shorter than one context of n_ctx={n_ctx}")
    bos = torch.full((n, 1), bos_id, dtype=stream.dtype)
    return torch.cat([bos, stream[: n * body].view(n, body)], dim=1)


def _tokenizer_hash(directory=TOKENIZER_DIR) -> str:
    return hashlib.sha256((directory / "tokenizer.json").read_bytes()).hexdigest()[:16]


def load_token_stream(config: CorpusConfig, split: str, progress: bool = True) -> Tensor:
    """The token stream of one corpus split (cached; builds the corpus first if needed).

    The corpus's token budget (``config.min_train_tokens``) is enforced here: refused at once for an
    offline corpus (:func:`~stagewise.data.corpus.check_corpus_source`), and checked against the
    train split's token count otherwise (:class:`~stagewise.data.corpus.CorpusBudgetError`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_corpus_source(config)
    key = {"corpus": config, "split": split, "tokenizer": _tokenizer_hash()}
    path = artifact_dir("lm-tokens", key) / "tokens.pt"
    if path.exists():
        stream = load_artifact(path)
    else:
        texts = load_corpus(config)[split]["text"]
        stream = tokenize_documents(texts, progress=progress)
        atomic_save(stream, path)
        log.info("%s split: %d documents, %d tokens", split, len(texts), stream.numel())
    if split == "train":
        check_train_tokens(config, stream.numel())
    return stream


@lru_cache(maxsize=8)
def load_contexts(config: CorpusConfig, split: str, n_ctx: int) -> Tensor:
    """BOS-prefixed contexts ``[N, n_ctx]`` (int32) of one split; ``.long()`` them for the model."""
    bos = load_tokenizer().token_to_id(BOS_TOKEN)
    return pack_contexts(load_token_stream(config, split), n_ctx, bos)


@dataclass(frozen=True)
class RepeatMix:
    """Repeated-text contexts mixed into the training stream (our addition; the paper trains on
    unmodified text). ``fraction = 0`` (the default) changes nothing.

    Each sample of each batch is, independently with probability ``fraction``, rewritten as
    ``BOS + S + S`` with ``h = (n_ctx - 1) // 2`` tokens in ``S`` (an odd body leaves the context's
    last token in place). ``source = "natural"``: ``S`` is the context's own first ``h`` tokens
    after BOS, a natural-text segment; ``source = "random"``: ``S`` is ``h`` tokens uniform over
    ``[0, vocab_size)`` minus the BOS id (Olsson et al.'s repeated random tokens, synthetic data).
    Which samples are rewritten, and the random tokens, are a function of ``(seed, step)`` only, so
    a resumed run sees the same batches. Every other context is unchanged.

    Meant to be a profile field ``field(default_factory=RepeatMix, metadata=HASH_OMIT_DEFAULT)``,
    so caches keyed by profiles without mixing stay valid.
    """

    fraction: float = 0.0
    source: str = "natural"  # "natural" | "random"
    seed: int = 0
    vocab_size: int = 5000  # only for source="random"

    def __post_init__(self):
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction!r}")
        if self.source not in ("natural", "random"):
            raise ValueError(f"source must be 'natural' or 'random', got {self.source!r}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")

    def apply(self, tokens: Tensor, step: int) -> Tensor:
        """The batch ``tokens`` [B, n_ctx] (BOS-prefixed) of training step ``step``, mixed (a copy)."""
        if self.fraction == 0:
            return tokens
        n_ctx = tokens.shape[1]
        if n_ctx < 3:
            raise ValueError(f"repeated contexts need n_ctx >= 3, got {n_ctx}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rows = torch.nonzero(torch.rand(tokens.shape[0], generator=g) < self.fraction).flatten()
        out = tokens.clone()
        if len(rows) == 0:
            return out
        h = (n_ctx - 1) // 2
        if self.source == "natural":
            seg = tokens[rows, 1:1 + h]
        else:
            bos = tokens[rows, :1].long()
            if bos.max() >= self.vocab_size:
                raise ValueError(f"BOS id {int(bos.max())} lies outside vocab_size={self.vocab_size}")
            r = torch.randint(0, self.vocab_size - 1, (len(rows), h), generator=g)
            seg = (r + (r >= bos).long()).to(tokens.dtype)  # skip the BOS id
        out[rows, 1:1 + h] = seg
        out[rows, 1 + h:1 + 2 * h] = seg
        return out


class LMBatches:
    """``batch_fn(step) -> (tokens,)``: batches of contexts, reshuffled every epoch.

    Sample ``p = step * batch_size + j`` of the stream of samples is context
    ``perm_e[p mod N]`` with ``e = p // N`` and ``perm_e`` a permutation seeded by ``(seed, e)``,
    so every context is seen once per epoch and any step's batch can be computed directly.
    ``repeat_mix`` (default: none) rewrites a fraction of each batch's contexts, see :class:`RepeatMix`.
    """

    def __init__(self, tokens: Tensor, batch_size: int, seed: int = 0, repeat_mix: RepeatMix = RepeatMix()):
        if tokens.dim() != 2 or tokens.shape[0] == 0:
            raise ValueError(f"tokens must have shape [N, n_ctx] with N >= 1, got {tuple(tokens.shape)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if batch_size > tokens.shape[0]:
            raise ValueError(f"batch_size ({batch_size}) exceeds the number of contexts ({tokens.shape[0]})")
        if repeat_mix.fraction and tokens.shape[1] < 3:
            raise ValueError(f"repeat_mix needs contexts of >= 3 tokens, got n_ctx={tokens.shape[1]}")
        self.tokens, self.batch_size, self.seed, self.repeat_mix = tokens, batch_size, seed, repeat_mix
        self._perms: dict[int, Tensor] = {}

    @property
    def num_contexts(self) -> int:
        return self.tokens.shape[0]

    def steps_per_epoch(self) -> float:
        return self.num_contexts / self.batch_size

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.num_contexts, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        n = self.num_contexts
        p = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = p // n, p % n
        out = torch.empty_like(p)
        for e in torch.unique(epochs).tolist():  # at most two epochs per batch
            mask = epochs == e
            out[mask] = self._perm(e)[offsets[mask]]
        return out

    def __call__(self, step: int) -> tuple[Tensor]:
        return (self.repeat_mix.apply(self.tokens[self.indices(step)].long(), step),)
