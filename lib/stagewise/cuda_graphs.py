"""Batch trees and the CUDA-graph capture recipe shared by training (:mod:`stagewise.train`) and
the SGLD sampler (:mod:`stagewise.llc.sampler`).

A *batch* is a tensor or a tuple / list / NamedTuple of them. A graphed step reads its batch from
static tensors, so each new batch is copied into them (:func:`copy_batch`); :func:`capture` is
torch's whole-network recipe: warm-up calls on a side stream, then one captured call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def map_batch(fn: Callable[[torch.Tensor], torch.Tensor], batch):
    """``fn`` applied to every tensor of a batch (a tensor, or tuples / lists / NamedTuples of them)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(map_batch(fn, b) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_batch(fn, b) for b in batch)
    return batch


def copy_batch(dst, src) -> None:
    """Copy batch ``src`` into the static batch ``dst`` of the same structure and shapes."""
    if isinstance(dst, torch.Tensor):
        if dst.shape != src.shape:
            raise ValueError(f"a CUDA-graphed step needs batches of one shape: {tuple(dst.shape)} vs {tuple(src.shape)}")
        dst.copy_(src, non_blocking=True)
    elif isinstance(dst, (tuple, list)):
        for d, s in zip(dst, src):
            copy_batch(d, s)


def capture(run: Callable[[], Any], warmup: int, prepare: Callable[[], None] | None = None
            ) -> tuple[torch.cuda.CUDAGraph, Any]:
    """``warmup`` calls of ``run`` on a side stream, then one call captured as a CUDA graph; returns
    ``(graph, what the captured call returned)``. ``prepare`` runs before every call, outside the
    capture (e.g. ``opt.zero_grad``). The warm-up really runs: undoing its effects is the caller's."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            if prepare is not None:
                prepare()
            run()
    torch.cuda.current_stream().wait_stream(side)
    if prepare is not None:
        prepare()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    return graph, out
