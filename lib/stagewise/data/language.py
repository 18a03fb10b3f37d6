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
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from stagewise.cache import HASH_OMIT_DEFAULT, artifact_dir, atomic_save, load_artifact
from stagewise.data.corpus import SPLITS, CorpusConfig, check_corpus_source, check_train_tokens, load_corpus
from stagewise.data.tokenizer import BOS_TOKEN, TOKENIZER_DIR, load_tokenizer
from stagewise.progress import tqdm

__all__ = ["tokenize_documents", "pack_contexts", "load_token_stream", "load_contexts", "RepeatMix", "LMBatches",
           "ContextCurriculum", "CurriculumBatches"]

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
    """Repeated segments mixed into the training stream (our addition; the paper trains on
    unmodified text). ``fraction = 0`` (the default) changes nothing.

    Each sample of each batch is, independently with probability ``fraction``, rewritten.

    ``layout = "halves"`` (the original analogue): the context becomes ``BOS + S + S`` with
    ``h = (n_ctx - 1) // 2`` tokens in ``S`` (an odd body leaves the context's last token in place).
    The repeat is always ``h`` positions back, so a layer-1 head can earn the induction score on
    ``BOS + R + R`` by attending to a fixed relative position (a positional copy head) without any
    content-based matching: docs/results/pilots.md, "the fixed-offset trap".

    ``layout = "segments"``: the body is cut into ``segments`` equal chunks; in each chunk one
    segment of length uniform in ``[min_length, max_length]`` is written at a random position and
    written again at a random later position of the same chunk (never overlapping), so the distance
    between the copies varies and only matching on content finds the earlier copy.
    ``layout = "scatter"``: ``segments`` segments, each written ``copies`` times anywhere in the
    body (uniform places, no two copies overlapping), so the distances spread over the whole
    context rather than within a chunk, and ``copies`` > 2 makes the repeats bursty. Tokens outside
    the segments are the context's own (``background = "natural"``) or fresh uniform tokens
    (``background = "random"``, fully synthetic contexts).

    ``source``: what ``S`` is made of. ``"natural"``: the context's own text at the first copy's
    place; ``"random"``: uniform over ``[0, vocab_size)`` minus the BOS id (Olsson et al.'s
    repeated random tokens); ``"unigram"``: tokens drawn at random positions of the batch's own
    text (so ``S`` has the corpus's unigram statistics: repeats "look like text" token by token).
    Which samples are rewritten, and every random choice, are a function of ``(seed, step)`` (and
    the batch), so a resumed run sees the same batches. Every other context is unchanged.

    Meant to be a profile field ``field(default_factory=RepeatMix, metadata=HASH_OMIT_DEFAULT)``,
    so caches keyed by profiles without mixing stay valid; the fields added after ``vocab_size``
    are hashed only when they differ from their defaults, for the same reason.
    """

    fraction: float = 0.0
    source: str = "natural"  # "natural" | "random" | "unigram"
    seed: int = 0
    vocab_size: int = 5000  # for source="random" and background="random"
    layout: str = field(default="halves", metadata=HASH_OMIT_DEFAULT)  # "halves" | "segments" | "scatter"
    segments: int = field(default=1, metadata=HASH_OMIT_DEFAULT)  # repeated segments per context
    min_length: int = field(default=8, metadata=HASH_OMIT_DEFAULT)
    max_length: int = field(default=32, metadata=HASH_OMIT_DEFAULT)
    background: str = field(default="natural", metadata=HASH_OMIT_DEFAULT)  # "natural" | "random"
    # source="random" and background="random": draw from ids [0, token_pool) only (0: the whole
    # vocabulary); GPT-2's lowest ids are its byte tokens and earliest merges, frequent pieces of text
    token_pool: int = field(default=0, metadata=HASH_OMIT_DEFAULT)
    copies: int = field(default=2, metadata=HASH_OMIT_DEFAULT)  # layout "scatter": copies of each segment

    def __post_init__(self):
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction!r}")
        if self.source not in REPEAT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(map(repr, REPEAT_SOURCES))}, got {self.source!r}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")
        if self.layout not in REPEAT_LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, REPEAT_LAYOUTS))}, got {self.layout!r}")
        if self.background not in ("natural", "random"):
            raise ValueError(f"background must be 'natural' or 'random', got {self.background!r}")
        if not isinstance(self.copies, int) or self.copies < 2:
            raise ValueError(f"copies must be an integer >= 2, got {self.copies!r}")
        if not isinstance(self.segments, int) or self.segments < 1:
            raise ValueError(f"segments must be an integer >= 1, got {self.segments!r}")
        if not isinstance(self.token_pool, int) or not (self.token_pool == 0 or 2 <= self.token_pool <= self.vocab_size):
            raise ValueError(f"token_pool must be 0 (the whole vocabulary) or an integer in [2, vocab_size = "
                             f"{self.vocab_size}], got {self.token_pool!r}")
        if not (isinstance(self.min_length, int) and isinstance(self.max_length, int)
                and 2 <= self.min_length <= self.max_length):
            raise ValueError(f"min_length and max_length must be integers with 2 <= min_length <= max_length, "
                             f"got {self.min_length!r} and {self.max_length!r}")

    def chunk_length(self, n_ctx: int) -> int:
        """Body positions per segment chunk (layout "segments")."""
        return (n_ctx - 1) // self.segments

    def _check_shape(self, n_ctx: int) -> None:
        if n_ctx < 3:
            raise ValueError(f"repeated contexts need n_ctx >= 3, got {n_ctx}")
        if self.layout == "scatter" and self.copies * self.segments * self.max_length > n_ctx - 1:
            raise ValueError(f"segments={self.segments} x copies={self.copies} copies of up to max_length="
                             f"{self.max_length} tokens cannot fit in the {n_ctx - 1} positions of n_ctx={n_ctx}: "
                             f"need copies * segments * max_length <= n_ctx - 1")
        if self.layout == "segments" and self.chunk_length(n_ctx) < 2 * self.max_length:
            raise ValueError(
                f"segments={self.segments} chunks of {self.chunk_length(n_ctx)} positions cannot hold two copies of "
                f"max_length={self.max_length} tokens at n_ctx={n_ctx}: need max_length <= "
                f"{self.chunk_length(n_ctx) // 2}")

    def _draw(self, g, tokens: Tensor, rows: Tensor, shape: tuple[int, ...], source: str, pool: int = 0) -> Tensor:
        """Fresh tokens of ``shape`` for the rewritten ``rows``: uniform non-BOS ids (of the first
        ``pool`` ids when ``pool``), or ids taken at random positions of the batch's (unmixed) text."""
        if source == "unigram":
            flat = tokens[:, 1:].reshape(-1)
            return flat[torch.randint(0, flat.numel(), shape, generator=g)].to(tokens.dtype)
        bos = tokens[rows, :1].long().view(-1, *([1] * (len(shape) - 1)))
        if bos.max() >= self.vocab_size:
            raise ValueError(f"BOS id {int(bos.max())} lies outside vocab_size={self.vocab_size}")
        if pool:
            r = torch.randint(0, pool - 1, shape, generator=g)
            r = r + (r >= bos).long() if bool((bos < pool).all()) else torch.randint(0, pool, shape, generator=g)
            return r.to(tokens.dtype)
        r = torch.randint(0, self.vocab_size - 1, shape, generator=g)
        return (r + (r >= bos).long()).to(tokens.dtype)  # skip the BOS id

    def apply(self, tokens: Tensor, step: int) -> Tensor:
        """The batch ``tokens`` [B, n_ctx] (BOS-prefixed) of training step ``step``, mixed (a copy)."""
        if self.fraction == 0:
            return tokens
        n_ctx = tokens.shape[1]
        self._check_shape(n_ctx)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rows = torch.nonzero(torch.rand(tokens.shape[0], generator=g) < self.fraction).flatten()
        out = tokens.clone()
        if len(rows) == 0:
            return out
        if self.background == "random":
            out[rows, 1:] = self._draw(g, tokens, rows, (len(rows), n_ctx - 1), "random", self.token_pool)
        if self.layout == "halves":
            h = (n_ctx - 1) // 2
            seg = out[rows, 1:1 + h] if self.source == "natural" else self._draw(g, tokens, rows, (len(rows), h),
                                                                                 self.source, self.token_pool)
            out[rows, 1:1 + h] = seg
            out[rows, 1 + h:1 + 2 * h] = seg
            return out
        if self.layout == "scatter":
            return self._scatter(out, tokens, rows, g)
        c, n = self.chunk_length(n_ctx), len(rows)
        for k in range(self.segments):
            length = torch.randint(self.min_length, self.max_length + 1, (n,), generator=g)
            # first copy at a in [0, c - 2L], second at b in [a + L, c - L], both inside chunk k
            a = (torch.rand(n, generator=g) * (c - 2 * length + 1)).long()
            b = a + length + (torch.rand(n, generator=g) * (c - a - 2 * length + 1)).long()
            offset = 1 + k * c
            span = torch.arange(self.max_length)
            valid = span[None, :] < length[:, None]  # [n, max_length]
            first = (offset + a)[:, None] + span[None, :]
            second = (offset + b)[:, None] + span[None, :]
            row_idx = rows[:, None].expand_as(first)
            if self.source == "natural":
                seg = out[row_idx.clamp(max=n_ctx - 1), first.clamp(max=n_ctx - 1)]
            else:
                seg = self._draw(g, tokens, rows, (n, self.max_length), self.source, self.token_pool)
                out[row_idx[valid], first[valid]] = seg[valid]
            out[row_idx[valid], second[valid]] = seg[valid]
        return out

    def _scatter(self, out: Tensor, tokens: Tensor, rows: Tensor, g) -> Tensor:
        """Layout "scatter": per rewritten row, ``segments`` segments, each written ``copies`` times
        anywhere in the body at uniform places that overlap no other copy; the first copy in
        reading order is the original (a natural segment: the text already there). A segment whose
        copies find no room in 100 draws is left out."""
        n_ctx = out.shape[1]
        body = n_ctx - 1
        for r in rows.tolist():
            free = torch.ones(body, dtype=torch.bool)
            for _ in range(self.segments):
                for _attempt in range(100):
                    length = int(torch.randint(self.min_length, self.max_length + 1, (1,), generator=g))
                    starts = sorted(int(x) for x in torch.randint(0, body - length + 1, (self.copies,), generator=g))
                    apart = all(b - a >= length for a, b in zip(starts, starts[1:]))
                    if apart and all(free[a:a + length].all() for a in starts):
                        break
                else:
                    continue
                for a in starts:
                    free[a:a + length] = False
                first = starts[0]
                if self.source == "natural":
                    seg = out[r, 1 + first:1 + first + length].clone()
                else:
                    seg = self._draw(g, tokens, rows[:1] * 0 + r, (1, length), self.source, self.token_pool)[0]
                for a in starts:
                    out[r, 1 + a:1 + a + length] = seg
        return out


REPEAT_SOURCES = ("natural", "random", "unigram")
REPEAT_LAYOUTS = ("halves", "segments", "scatter")


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


@dataclass(frozen=True)
class ContextCurriculum:
    """A context-length curriculum (our addition; the paper trains at one context length): the
    first ``steps`` training steps on contexts of ``n_ctx`` tokens (as many tokens per step: the
    batch grows by the ratio of the lengths), each rewritten by ``repeat_mix``, then the profile's
    own data. Short contexts hold fewer distractors for an attention head to sort through, which
    is what let the induction pilots form a layer-0 previous-token head at all (docs/results/pilots.md,
    *Induction-head pilots*)."""

    steps: int
    n_ctx: int = 32
    repeat_mix: RepeatMix = field(default_factory=RepeatMix)

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.n_ctx, int) or self.n_ctx < 3:
            raise ValueError(f"n_ctx must be an integer >= 3, got {self.n_ctx!r}")

    def batches(self, corpus: CorpusConfig, main, tokens_per_step: int, data_seed: int) -> "CurriculumBatches":
        """``main``'s batch function preceded by this curriculum: ``steps`` steps of the corpus's
        ``n_ctx``-token training contexts, ``tokens_per_step // n_ctx`` per batch (as many tokens
        per step as ``main``), rewritten by ``repeat_mix``."""
        warm = LMBatches(load_contexts(corpus, "train", self.n_ctx), tokens_per_step // self.n_ctx, data_seed,
                         repeat_mix=self.repeat_mix)
        return CurriculumBatches(warm, main, self.steps)


class CurriculumBatches:
    """``batch_fn(step)``: ``warm(step)`` for the curriculum's first steps, then ``main(step)``;
    both deterministic in the step, so a resumed run sees the same batches."""

    def __init__(self, warm: LMBatches, main: LMBatches, steps: int):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.warm, self.main, self.steps = warm, main, steps

    def __call__(self, step: int) -> tuple[Tensor]:
        return self.warm(step) if step < self.steps else self.main(step)
