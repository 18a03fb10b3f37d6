"""Head ablations of the attention-only language model (refined-LLC paper, App. E, B.1, B.2).

Which activation. A head's contribution to the residual stream is ``z_h W_O^h`` with ``z_h`` the
head's attention-weighted values (TransformerLens ``blocks.{l}.attn.hook_z``, shape [batch, pos,
head, d_head]). We ablate at **hook_z**: replacing ``z_h`` replaces exactly that head's term,
leaves the other heads and the shared output bias b_O untouched, and needs no ``use_attn_result``.

* zero ablation: ``z_h ← 0`` (the head writes nothing);
* mean ablation: ``z_h ← E[z_h]``, the mean over a reference data set, **per position** by default
  (mean over contexts at each position k, so position 0, which can only attend to BOS, keeps its
  own mean), or over contexts and positions with ``per_position=False``. The paper (App. E) says
  "their mean value across the dataset" without saying which; we chose per position.

The ablation score of App. E is ℓ(ablated) − ℓ(clean) on the same data the means came from.

:func:`icl_score_under_ablation` is the ICL score (loss at token k2 minus loss at token k1, App.
B.3.3 of the main paper; the paper's k1 = 50, k2 = 500 at context 1024) with some heads
mean-ablated: the per-head ICL score of the refined paper's Fig. 10 is the score of head A with
the other induction head mean-ablated (:func:`per_head_icl_scores`). "The loss at token k" is
``−log p(t_k | t_<k)``, entry ``k − 1`` of the per-token loss.

Tokens in context (App. B.1): :func:`tokens_in_context` mean-ablates one head and keeps the
``top_k`` (sample, position) pairs whose per-token loss rises most, with the head's max-attention
position there; :func:`classify_tokens_in_context` labels each, serially as in B.1, as

1. ``induction`` (B.2.1): the current token t_k occurred earlier at some j < k and was followed
   there by the next token (t_j = t_k, t_{j+1} = t_{k+1}: [A][B] … [A] → [B]; longer in-context
   n-grams contain such a pair), **and** the head's max-attention position is a first [B]
   (j + 1, an induction head) or the current / previous token (k, k − 1: the previous-token half of
   the circuit; the paper says "the second [A]"). ``require_attention=False`` drops the second test.
2. ``dyck`` (B.3.1): the next token contains a closing bracket whose opening partner occurs
   earlier in the context with validly nested brackets in between. Brackets: () [] {} «» “” and the
   straight double quote, which is an opener after whitespace, an opening bracket or the start of
   the text and a closer otherwise (the paper's letter-adjacency heuristic, simplified). The
   natural-language split constructions (either … or, Why … ?) are not included.
3. ``ngram`` (B.5.1): the tokens from the max-attention position through the next token occur as
   the same sequence in at least one other of the head's tokens in context.
4. ``unexplained``. Skip n-grams (B.4) need the paper's hand-made lists and are not implemented.

:func:`pattern_fractions` gives each head's share per class and its class by the relative rule
of B.1 (the explained class with the largest share).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from stagewise.models.language import per_token_loss
from stagewise.refined import head_labels, parse_head

__all__ = ["ABLATIONS", "head_output_means", "ablation_hooks", "ablated_per_token_loss", "ablation_scores",
           "icl_score_under_ablation", "per_head_icl_scores", "parse_heads", "PATTERNS", "tokens_in_context",
           "induction_pattern", "dyck_pattern", "classify_tokens_in_context", "pattern_fractions",
           "vocabulary_strings", "cached_per_head_icl_scores", "cached_tokens_in_context"]

log = logging.getLogger(__name__)

ABLATIONS = ("mean", "zero")


def parse_heads(model, heads) -> list[tuple[int, int]]:
    """A head (``"1:6"`` / ``(1, 6)``) or a list of them -> distinct ``[(layer, head), ...]``."""
    if isinstance(heads, str) or (isinstance(heads, tuple) and len(heads) == 2
                                  and all(isinstance(v, int) for v in heads)):
        heads = [heads]
    out = [parse_head(h, model.cfg.n_layers, model.cfg.n_heads) for h in heads]
    if len(set(out)) != len(out):
        raise ValueError(f"heads lists a head twice: {heads!r}")
    return out


def _check_tokens(model, tokens: Tensor) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.shape[0] < 1:
        raise ValueError(f"tokens must be a [batch >= 1, pos] tensor of token ids, got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    if not 2 <= tokens.shape[1] <= model.cfg.n_ctx:
        raise ValueError(f"tokens must have between 2 and n_ctx={model.cfg.n_ctx} positions, got {tokens.shape[1]}")
    return tokens.long()


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


@torch.no_grad()
def head_output_means(model, tokens: Tensor, batch_size: int = 16, per_position: bool = True) -> Tensor:
    """Mean of every head's ``z`` (hook_z) over the reference ``tokens`` [N, T].

    Shape [n_layers, T, n_heads, d_head] (per position) or [n_layers, 1, n_heads, d_head].
    """
    tokens = _check_tokens(model, tokens)
    _check_batch_size(batch_size)
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    total = None
    for start in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(tokens[start:start + batch_size], names_filter=lambda n: n in names)
        z = torch.stack([cache[n].to(torch.float64).sum(0) for n in names])  # [L, T, H, d]
        total = z if total is None else total + z
    means = total / len(tokens)
    if not per_position:
        means = means.mean(1, keepdim=True)
    return means.to(next(model.parameters()).dtype)


def ablation_hooks(model, heads, kind: str = "mean", means: Tensor | None = None) -> list[tuple[str, object]]:
    """TransformerLens ``fwd_hooks`` that ablate ``heads`` at hook_z (zero or mean, see module doc)."""
    if kind not in ABLATIONS:
        raise ValueError(f"kind must be one of {ABLATIONS}, got {kind!r}")
    parsed = parse_heads(model, heads)
    if kind == "mean":
        expected = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
        if means is None or means.dim() != 4 or (means.shape[0], means.shape[2], means.shape[3]) != expected:
            raise ValueError(f"mean ablation needs means of shape [n_layers, T or 1, n_heads, d_head] with "
                             f"(n_layers, n_heads, d_head) = {expected} (see head_output_means), got "
                             f"{None if means is None else tuple(means.shape)}")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in parsed:
        by_layer[layer].append(head)
    hooks = []
    for layer, hs in sorted(by_layer.items()):
        def hook(z, hook, hs=hs, layer=layer):
            if kind == "zero":
                z[:, :, hs] = 0.0
            else:
                m = means[layer]
                if m.shape[0] != 1:
                    if m.shape[0] < z.shape[1]:
                        raise ValueError(f"per-position means cover {m.shape[0]} positions but the input has "
                                         f"{z.shape[1]}")
                    m = m[:z.shape[1]]
                z[:, :, hs] = m[:, hs].to(z.device, z.dtype)
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return hooks


@torch.no_grad()
def ablated_per_token_loss(model, tokens: Tensor, heads=(), kind: str = "mean", means: Tensor | None = None,
                           batch_size: int = 16) -> Tensor:
    """Per-token loss ``−log p(t_{k+1} | t_≤k)`` [N, T−1] with ``heads`` ablated (none: the clean loss)."""
    tokens = _check_tokens(model, tokens)
    _check_batch_size(batch_size)
    hooks = ablation_hooks(model, heads, kind, means) if len(heads) else []
    out = []
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size]
        logits = model.run_with_hooks(batch, return_type="logits", fwd_hooks=hooks)
        out.append(per_token_loss(logits, batch).float())
    return torch.cat(out)


def ablation_scores(model, tokens: Tensor, heads=None, kind: str = "mean", means: Tensor | None = None,
                    batch_size: int = 16) -> pd.DataFrame:
    """Ablation score (App. E) of each head ablated alone: mean loss ablated − mean loss clean on
    ``tokens``. Mean ablation uses ``means`` or, if None, the means over ``tokens`` themselves (the
    paper's convention: the same data set). One row per head: head, layer, loss, loss_ablated, score.
    """
    tokens = _check_tokens(model, tokens)
    heads = head_labels(model.cfg.n_layers, model.cfg.n_heads) if heads is None else heads
    if kind == "mean" and means is None:
        means = head_output_means(model, tokens, batch_size)
    clean = float(ablated_per_token_loss(model, tokens, (), batch_size=batch_size).mean())
    rows = []
    for layer, head in parse_heads(model, heads):
        ablated = float(ablated_per_token_loss(model, tokens, [(layer, head)], kind, means, batch_size).mean())
        rows.append({"head": f"{layer}:{head}", "layer": layer, "loss": clean, "loss_ablated": ablated,
                     "score": ablated - clean})
    return pd.DataFrame(rows)


def _check_icl_tokens(k1: int, k2: int, width: int) -> None:
    for name, k in (("k1", k1), ("k2", k2)):
        if not isinstance(k, int) or not 1 <= k <= width:
            raise ValueError(f"{name} must be an integer token index in [1, {width}], got {k!r}")
    if k1 >= k2:
        raise ValueError(f"k1 ({k1}) must be smaller than k2 ({k2})")


def icl_score_under_ablation(model, tokens: Tensor, k1: int, k2: int, ablate=(), kind: str = "mean",
                             means: Tensor | None = None, batch_size: int = 16) -> float:
    """ICL score ``mean(ℓ_k2 − ℓ_k1)`` over ``tokens`` with the heads ``ablate`` ablated (none: the
    plain ICL score). Tokens are 1-based as in the paper (the loss at token k is entry k − 1)."""
    tokens = _check_tokens(model, tokens)
    _check_icl_tokens(k1, k2, tokens.shape[1] - 1)
    losses = ablated_per_token_loss(model, tokens, ablate, kind, means, batch_size)
    return float((losses[:, k2 - 1] - losses[:, k1 - 1]).mean())


def per_head_icl_scores(model, tokens: Tensor, k1: int, k2: int, heads: Sequence = ("1:6", "1:7"),
                        means: Tensor | None = None, reference: Tensor | None = None,
                        batch_size: int = 16) -> dict[str, float]:
    """Refined paper Fig. 10: the per-head ICL score of each of ``heads`` is the ICL score with the
    *other* heads of the list mean-ablated; ``"none"`` is the plain ICL score and ``"all"`` the score
    with every listed head ablated. Means over ``reference`` (default ``tokens``) unless given."""
    parsed = parse_heads(model, list(heads))
    if len(parsed) < 2:
        raise ValueError(f"heads must list at least two heads (each is scored with the others ablated), got {heads!r}")
    if means is None:
        means = head_output_means(model, tokens if reference is None else reference, batch_size)
    out = {"none": icl_score_under_ablation(model, tokens, k1, k2, (), batch_size=batch_size)}
    for head in parsed:
        others = [h for h in parsed if h != head]
        out[f"{head[0]}:{head[1]}"] = icl_score_under_ablation(model, tokens, k1, k2, others, "mean", means, batch_size)
    out["all"] = icl_score_under_ablation(model, tokens, k1, k2, parsed, "mean", means, batch_size)
    return out


# Bump when an ablation score's definition changes: cached values of older versions are not reused.
ABLATION_CACHE_VERSION = 1


def _ablation_key(model, **parts) -> dict:
    """Cache key of an ablation result: the model's weights and every input, tensors by content."""
    from stagewise.cache import tensor_digest
    from stagewise.probes.language import weights_digest

    return {"version": ABLATION_CACHE_VERSION, "weights": weights_digest(model),
            **{k: tensor_digest(v) if isinstance(v, Tensor) else v for k, v in parts.items()}}


def cached_per_head_icl_scores(model, tokens: Tensor, k1: int, k2: int, heads: Sequence, reference: Tensor,
                               batch_size: int = 16) -> dict[str, float]:
    """:func:`per_head_icl_scores` with means over ``reference``, cached by weights and data
    (:func:`stagewise.cache.cached_value`): a notebook rerun loads it instead of recomputing."""
    from stagewise.cache import cached_value

    key = _ablation_key(model, tokens=tokens, reference=reference, k1=int(k1), k2=int(k2), heads=list(heads),
                        batch_size=batch_size)
    return cached_value("lm-ablation-icl", key, lambda: per_head_icl_scores(
        model, tokens, k1, k2, heads, means=head_output_means(model, reference, batch_size), batch_size=batch_size))


# --------------------------------------------------------------------------------------------
# Tokens in context (App. B.1) and their pattern classes (B.2, B.3, B.5)
# --------------------------------------------------------------------------------------------

PATTERNS = ("induction", "dyck", "ngram", "unexplained")


@torch.no_grad()
def tokens_in_context(model, tokens: Tensor, head, top_k: int = 1000, kind: str = "mean",
                      means: Tensor | None = None, batch_size: int = 16) -> pd.DataFrame:
    """The ``top_k`` tokens in context (sample i, position k: predicting t_{k+1} from t_≤k) whose
    loss rises most when ``head`` is ablated (mean ablation with ``means``, default over ``tokens``).

    Columns: sample, position, token (t_k), next_token (t_{k+1}), loss, loss_ablated, increase,
    max_attention (the key position the head attends to most from query k, in the clean run),
    attention (that weight). Sorted by increase, largest first (ties: sample, position).
    """
    tokens = _check_tokens(model, tokens)
    _check_batch_size(batch_size)
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    (layer, index), = parse_heads(model, head)
    if kind == "mean" and means is None:
        means = head_output_means(model, tokens, batch_size)
    hooks = ablation_hooks(model, [(layer, index)], kind, means)
    pattern_name = f"blocks.{layer}.attn.hook_pattern"
    width = tokens.shape[1] - 1
    best = None  # [increase, sample, position, loss, loss_ablated, max_attention, attention] rows
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size]
        logits, cache = model.run_with_cache(batch, names_filter=lambda n: n == pattern_name)
        clean = per_token_loss(logits, batch).float()
        ablated = per_token_loss(model.run_with_hooks(batch, return_type="logits", fwd_hooks=hooks), batch).float()
        pattern = cache[pattern_name][:, index, :width]  # [B, query k < T-1, key]
        weight, argmax = pattern.max(-1)
        b = len(batch)
        sample = torch.arange(start, start + b).repeat_interleave(width)
        position = torch.arange(width).repeat(b)
        rows = torch.stack([(ablated - clean).reshape(-1).double(), sample.double(), position.double(),
                            clean.reshape(-1).double(), ablated.reshape(-1).double(),
                            argmax.reshape(-1).double(), weight.reshape(-1).double()], 1)
        best = rows if best is None else torch.cat([best, rows])
        if len(best) > top_k:
            best = best[torch.topk(best[:, 0], top_k).indices]
    frame = pd.DataFrame(best.numpy(), columns=["increase", "sample", "position", "loss", "loss_ablated",
                                                "max_attention", "attention"])
    for col in ("sample", "position", "max_attention"):
        frame[col] = frame[col].astype("int64")
    frame = frame.sort_values(["increase", "sample", "position"], ascending=[False, True, True], ignore_index=True)
    frame.insert(2, "token", tokens[frame["sample"], frame["position"]].numpy())
    frame.insert(3, "next_token", tokens[frame["sample"], frame["position"] + 1].numpy())
    frame.insert(0, "head", f"{layer}:{index}")
    return frame[["head", "sample", "position", "token", "next_token", "loss", "loss_ablated", "increase",
                  "max_attention", "attention"]]


def cached_tokens_in_context(model, tokens: Tensor, heads: Sequence, top_k: int, reference: Tensor,
                             batch_size: int = 16) -> pd.DataFrame:
    """:func:`tokens_in_context` of each of ``heads`` (mean ablation, means over ``reference``), one
    frame with a ``head`` column, cached by weights and data like :func:`cached_per_head_icl_scores`."""
    from stagewise.cache import cached_value

    def compute() -> pd.DataFrame:
        means = head_output_means(model, reference, batch_size)
        return pd.concat([tokens_in_context(model, tokens, h, top_k=top_k, means=means, batch_size=batch_size)
                          for h in heads], ignore_index=True)

    key = _ablation_key(model, tokens=tokens, reference=reference, heads=list(heads), top_k=int(top_k),
                        batch_size=batch_size)
    return cached_value("lm-tokens-in-context", key, compute)


def induction_pattern(context: Sequence[int], k: int, max_attention: int | None = None) -> bool:
    """B.2.1 on one context (token ids): is (context[k] -> context[k + 1]) an in-context repeat
    [A][B] … [A] → [B], with (if ``max_attention`` is given) the head attending to a first [B]
    (j + 1), the current token (k) or the previous token (k − 1)?"""
    if not 0 <= k < len(context) - 1:
        raise ValueError(f"position k must be in [0, {len(context) - 2}] (a next token must exist), got {k}")
    a, b = context[k], context[k + 1]
    firsts = [j + 1 for j in range(k) if context[j] == a and context[j + 1] == b]
    if not firsts:
        return False
    return max_attention is None or max_attention in firsts or max_attention in (k, k - 1)


_CLOSE_TO_OPEN = {")": "(", "]": "[", "}": "{", "»": "«", "”": "“"}
_OPENERS = set(_CLOSE_TO_OPEN.values())
_QUOTE = '"'


def _quote_role(text: str, i: int) -> str:
    before = text[i - 1] if i > 0 else " "
    return "open" if before.isspace() or before in _OPENERS else "close"


def dyck_pattern(context: Sequence[str], k: int) -> bool:
    """B.3.1 on one context given as token strings: does the next token (k + 1) contain a closing
    bracket whose opener occurs earlier, with validly nested brackets in between?"""
    if not 0 <= k < len(context) - 1:
        raise ValueError(f"position k must be in [0, {len(context) - 2}] (a next token must exist), got {k}")
    prefix = "".join(context[:k + 1])
    nxt = context[k + 1]
    text = prefix + nxt
    for c, ch in enumerate(nxt):
        pos = len(prefix) + c
        if ch in _CLOSE_TO_OPEN or (ch == _QUOTE and _quote_role(text, pos) == "close"):
            target, end = ch, pos
            break
    else:
        return False
    stack: list[str] = []  # closers met while scanning back, waiting for their openers
    for i in range(end - 1, -1, -1):
        ch = text[i]
        if ch == _QUOTE:
            role = _quote_role(text, i)
            ch_is_close, ch_is_open = role == "close", role == "open"
        else:
            ch_is_close, ch_is_open = ch in _CLOSE_TO_OPEN, ch in _OPENERS
        if ch_is_close:
            stack.append(ch)
        elif ch_is_open:
            expected = stack[-1] if stack else target
            if (_CLOSE_TO_OPEN.get(expected) if expected != _QUOTE else _QUOTE) != ch:
                return False  # crossed brackets: not validly nested
            if not stack:
                return True
            stack.pop()
    return False


def vocabulary_strings(tokenizer=None) -> list[str]:
    """Each token id decoded on its own (byte-level pieces of a UTF-8 character decode to U+FFFD)."""
    if tokenizer is None:
        from stagewise.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    return [tokenizer.decode([i], skip_special_tokens=False) for i in range(tokenizer.get_vocab_size())]


def classify_tokens_in_context(frame: pd.DataFrame, tokens: Tensor, vocabulary: Sequence[str],
                               require_attention: bool = True) -> pd.Series:
    """The pattern class (:data:`PATTERNS`) of each row of a :func:`tokens_in_context` frame, tested
    in the order induction, dyck, ngram (module doc); ``tokens`` the contexts the frame indexes,
    ``vocabulary`` the string of each token id (:func:`vocabulary_strings`)."""
    needed = {"sample", "position", "max_attention"}
    if missing := needed - set(frame.columns):
        raise ValueError(f"frame lacks columns {sorted(missing)} (expected a tokens_in_context frame)")
    if int(tokens.max()) >= len(vocabulary):
        raise ValueError(f"vocabulary has {len(vocabulary)} strings but tokens go up to id {int(tokens.max())}")
    rows = list(zip(frame["sample"], frame["position"], frame["max_attention"]))
    spans = [tuple(tokens[i, min(m, k):k + 2].tolist()) for i, k, m in rows]
    counts: dict[tuple, int] = defaultdict(int)
    for span in spans:
        counts[span] += 1
    labels = []
    for (i, k, m), span in zip(rows, spans):
        ids = tokens[i, :k + 2].tolist()
        if induction_pattern(ids, k, m if require_attention else None):
            labels.append("induction")
        elif dyck_pattern([vocabulary[t] for t in ids], k):
            labels.append("dyck")
        elif counts[span] >= 2:
            labels.append("ngram")
        else:
            labels.append("unexplained")
    return pd.Series(labels, index=frame.index, name="pattern")


def pattern_fractions(frame: pd.DataFrame, patterns: pd.Series) -> pd.DataFrame:
    """Share of each pattern class among each head's tokens in context (Fig. 9), and the head's
    class: the explained class with the largest share (B.1's relative rule), or "unexplained"."""
    table = pd.crosstab(frame["head"], patterns, normalize="index").reindex(columns=list(PATTERNS), fill_value=0.0)
    explained = table[[p for p in PATTERNS if p != "unexplained"]]
    table["class"] = explained.idxmax(axis=1).where(explained.max(axis=1) > 0, "unexplained")
    return table
