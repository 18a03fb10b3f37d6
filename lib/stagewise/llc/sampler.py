"""SGLD estimation of the local learning coefficient (main paper §3.1, App. A, D.3).

The tempered posterior localized at w* (eq. 7)::

    p(w) ∝ exp(−nβ ℓ_n(w) − γ/2 ‖w − w*‖²)

is sampled with SGLD (eq. 8)::

    w ← w − ε/2 (nβ ∇ℓ_m(w) + γ (w − w*)) + N(0, ε)

and the LLC is estimated as λ̂(w*) = nβ (E_w[ℓ_n(w)] − ℓ_n(w*)) (eq. 5), the expectation taken over
the draws after burn-in and over chains. nβ defaults to m / log m, m the SGLD batch size (D.3.1).
The D.3.3 reparametrisation β̃ = εnβ/2, γ̃ = εγ/2 is available as :meth:`SGLDConfig.from_tilde`.

Choices made here (see the docstring of :func:`estimate_llc` for the reasons):

* the minibatch loss ℓ_{B_t}(w_t) computed for the gradient *is* the draw (no second forward pass);
* all chains see the same batch B_t at step t, and ℓ(w*) is evaluated on that same batch
  (one gradient-free forward pass per draw, shared by the chains), so each draw contributes the
  paired difference ℓ_{B_t}(w_t) − ℓ_{B_t}(w*) and batch-to-batch noise cancels;
* the seed fixes the batch order (one stream) and the injected noise (one stream per chain), so
  runs at different checkpoints see identical noise and batches (D.3.2);
* ``compute_dtype="bfloat16"`` (opt-in) runs only the loss's forward and backward under bf16
  autocast; the chains' state w_t, the noise, the localization term and the update stay in the
  weights' dtype. It is an argument of :func:`estimate_llc`, not a field of :class:`SGLDConfig`,
  so the cache keys of every existing fp32 result stay valid (like ``chain_mode`` and ``compile``);
  the result records it as ``LLCResult.compute_dtype``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from stagewise import cuda_graphs
from stagewise.cuda_graphs import copy_batch, map_batch
from stagewise.llc.diagnostics import FLAGS, chain_diagnostics, estimate_convergence
from stagewise.progress import tqdm

__all__ = ["SGLDConfig", "LLCResult", "estimate_llc", "default_nbeta", "derive_seed", "fast_bf16_support",
           "resolve_compute_dtype"]

log = logging.getLogger(__name__)

LossFn = Callable[[dict[str, torch.Tensor], Any], torch.Tensor]
Data = torch.Tensor | Sequence[torch.Tensor] | None


def default_nbeta(batch_size: int) -> float:
    """nβ = m / log m (main paper D.3.1), m the SGLD batch size."""
    return batch_size / math.log(batch_size)


def _check_number(name: str, value, *, low: float, low_inclusive: bool, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"SGLDConfig.{name} must be a finite number {allowed}, got {value!r}")
    if value < low or (value == low and not low_inclusive):
        raise ValueError(f"SGLDConfig.{name} must be {allowed}, got {value!r}")


def _check_int(name: str, value, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"SGLDConfig.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class SGLDConfig:
    """Hyperparameters of SGLD-based LLC estimation, named as in eq. (8) of the main paper.

    epsilon: step size ε (> 0). gamma: localization strength γ (>= 0).
    nbeta: nβ, the inverse temperature times the sample size (> 0); ``None`` = m / log m (D.3.1),
    which needs data (a potential without data has no m: give nβ explicitly).
    num_chains: C independent chains. num_draws: draws per chain after burn-in (one per step).
    num_burnin: SGLD steps discarded before the draws. batch_size: m, rows per SGLD minibatch.
    seed: fixes the injected noise and the batch order (D.3.2: same seed at every checkpoint).
    """

    epsilon: float = 1e-3
    gamma: float = 100.0
    nbeta: float | None = None
    num_chains: int = 4
    num_draws: int = 500
    num_burnin: int = 100
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        _check_number("epsilon", self.epsilon, low=0.0, low_inclusive=False, allowed="> 0 (the SGLD step size ε)")
        _check_number("gamma", self.gamma, low=0.0, low_inclusive=True, allowed=">= 0 (the localization strength γ)")
        if self.nbeta is not None:
            _check_number("nbeta", self.nbeta, low=0.0, low_inclusive=False,
                          allowed="> 0, or None for m / log m (the inverse temperature nβ)")
        _check_int("num_chains", self.num_chains, low=1)
        _check_int("num_draws", self.num_draws, low=1)
        _check_int("num_burnin", self.num_burnin, low=0)
        # m / log m is undefined at m = 1.
        _check_int("batch_size", self.batch_size, low=2)
        _check_int("seed", self.seed, low=0)

    @classmethod
    def from_tilde(cls, epsilon: float, beta_tilde: float, gamma_tilde: float, **kwargs) -> "SGLDConfig":
        """Build from the D.3.3 parametrisation Δw = −β̃∇ℓ_m + γ̃(w* − w) + N(0, ε):
        nβ = 2β̃/ε, γ = 2γ̃/ε (the paper's regression setting: ε = 3e-4, β̃ = γ̃ = 0.01)."""
        return cls(epsilon=epsilon, nbeta=2 * beta_tilde / epsilon, gamma=2 * gamma_tilde / epsilon, **kwargs)

    def resolved_nbeta(self, has_data: bool) -> float:
        if self.nbeta is not None:
            return float(self.nbeta)
        if not has_data:
            raise ValueError("SGLDConfig.nbeta is None (m / log m) but no data was given: a potential without data "
                             "has no batch size m, so set nbeta explicitly")
        return default_nbeta(self.batch_size)

    @property
    def num_steps(self) -> int:
        return self.num_burnin + self.num_draws


@dataclass(frozen=True, eq=False)
class LLCResult:
    """Outcome of :func:`estimate_llc`; arrays are float64 numpy.

    llc_mean / llc_std: mean and sample standard deviation (ddof=1; NaN with one chain) of the
    per-chain estimates over the chains *not* excluded (NaN/inf or divergent chains are excluded).
    llc_per_chain [C]: λ̂_c = nβ mean_t (ℓ_{B_t}(w_t^c) − ℓ_{B_t}(w*)) for every chain.
    loss_trace [C, draws]: the minibatch losses ℓ_{B_t}(w_t^c) of the draws.
    llc_trace [C, draws]: online estimate λ̂_τ of eq. (26), per chain.
    loss_init: ℓ(w*), the mean over the draws' batches of ℓ_{B_t}(w*); loss_init_trace [draws] per batch.
    burnin_loss_trace [C, burnin]: minibatch losses during burn-in (for calibration plots).
    diagnostics: {chain: [flags]} for flagged chains only (flags in ``FLAGS``); empty = all well.
    excluded_chains: chains left out of llc_mean (flag 'nan' or 'divergence').
    convergence (property): the estimate's own convergence (settle time, last-quarter drift, chain
    agreement, flag ``unconverged``; :func:`stagewise.llc.diagnostics.estimate_convergence`),
    derived from ``llc_trace`` when first read and never stored: results cached before it existed
    get it too, with no cache change.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    llc_trace: np.ndarray
    loss_init: float
    loss_init_trace: np.ndarray
    burnin_loss_trace: np.ndarray
    diagnostics: dict[int, list[str]]
    excluded_chains: list[int]
    nbeta: float
    num_sampled: int
    config: SGLDConfig
    elapsed_s: float = float("nan")
    messages: list[str] = field(default_factory=list)
    compute_dtype: str | None = None  # None: the weights' own dtype; "bfloat16": loss under bf16 autocast

    @functools.cached_property
    def convergence(self) -> dict:
        return estimate_convergence(self.llc_trace, self.excluded_chains)

    @property
    def unconverged(self) -> bool:
        """Per-estimate flag: the running estimate still drifts, or the chains disagree."""
        return bool(self.convergence["unconverged"])

    @property
    def llc_sem(self) -> float:
        """Standard error of llc_mean over the included chains."""
        n = len(self.llc_per_chain) - len(self.excluded_chains)
        return self.llc_std / math.sqrt(n) if n > 1 else float("nan")

    @property
    def llc_trace_mean(self) -> np.ndarray:
        """Online estimate averaged over the included chains (the paper's overlay in Fig. D.7)."""
        keep = [c for c in range(len(self.llc_per_chain)) if c not in self.excluded_chains]
        if not keep:
            return np.full(self.llc_trace.shape[1], np.nan)
        return self.llc_trace[keep].mean(axis=0)

    @property
    def sgld_steps_per_s(self) -> float:
        """Chain-steps per second (C × (burn-in + draws) / elapsed)."""
        return self.config.num_chains * self.config.num_steps / self.elapsed_s

    def to_dict(self) -> dict:
        """Plain (picklable, module-independent) form for the artifact cache."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = dataclasses.asdict(self.config)
        out["diagnostics"] = {int(k): list(v) for k, v in self.diagnostics.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "LLCResult":
        d = dict(d)
        d["config"] = SGLDConfig(**d["config"])
        d["diagnostics"] = {int(k): list(v) for k, v in d["diagnostics"].items()}
        return cls(**d)

    def __repr__(self) -> str:
        flags = f", diagnostics={self.diagnostics}" if self.diagnostics else ""
        if self.unconverged:
            flags += f", unconverged ({', '.join(self.convergence['reasons'])})"
        return (f"LLCResult(llc_mean={self.llc_mean:.4g}, llc_std={self.llc_std:.3g}, "
                f"chains={len(self.llc_per_chain)}, draws={self.loss_trace.shape[1]}{flags})")


def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for one random stream, stable across runs, platforms and Python versions."""
    digest = hashlib.sha256(f"stagewise.llc:{seed}:{stream}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --------------------------------------------------------------------------------------------
# Parameters: the sampled weights as one flat vector θ (no per-parameter Python loops in the step)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    names: tuple[str, ...]  # sampled tensors, in order
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numel: int

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        # one split, not a slice per tensor: the backward of a slice writes its gradient into a zeroed
        # copy of the whole of theta (a fill and an add of d floats per sampled tensor: 39% of a `cpu`
        # LM chain-step with its 27 tensors), the backward of a split concatenates the pieces once
        pieces = torch.split(theta, [s.numel() for s in self.shapes])
        return {n: piece.view(s) for n, s, piece in zip(self.names, self.shapes, pieces)}


def _select(params: Mapping[str, torch.Tensor], params_to_sample, param_mask):
    if not isinstance(params, Mapping) or not params:
        raise TypeError("params must be a non-empty dict of name -> Tensor (the point w*)")
    for name, t in params.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"params[{name!r}] is a {type(t).__name__}, not a Tensor")
    if params_to_sample is None:
        names = list(params)
    elif callable(params_to_sample):
        names = [n for n in params if params_to_sample(n)]
    else:
        if isinstance(params_to_sample, str):
            raise TypeError("params_to_sample must be a list of names or a predicate, not a single string")
        names = list(params_to_sample)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise KeyError(f"params_to_sample names {unknown} are not in params (known: {list(params)[:20]}...)")
        names = [n for n in params if n in set(names)]  # keep the params' order
    if not names:
        raise ValueError("params_to_sample selects no weights: there is nothing to sample")
    dtypes = {params[n].dtype for n in names}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"sampled weights must share one floating dtype, got {sorted(map(str, dtypes))}")
    devices = {params[n].device for n in params}
    if len(devices) != 1:
        raise ValueError(f"all params must be on one device, got {sorted(map(str, devices))}")
    mask = None
    if param_mask is not None:
        extra = [n for n in param_mask if n not in names]
        if extra:
            raise KeyError(f"param_mask names {extra} are not among the sampled weights {names[:20]}")
        parts = []
        for n in names:
            m = param_mask.get(n)
            if m is None:
                parts.append(torch.ones(params[n].numel(), dtype=torch.bool))
            else:
                if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != params[n].shape:
                    raise ValueError(f"param_mask[{n!r}] must be a bool Tensor of shape {tuple(params[n].shape)}")
                parts.append(m.detach().reshape(-1).cpu())
        mask = torch.cat(parts)
        if not mask.any():
            raise ValueError("param_mask selects no weights: there is nothing to sample")
    shapes = tuple(params[n].shape for n in names)
    offsets = tuple(int(x) for x in np.cumsum([0] + [s.numel() for s in shapes])[:-1])
    layout = _Layout(tuple(names), shapes, offsets, sum(s.numel() for s in shapes))
    return layout, mask


# --------------------------------------------------------------------------------------------
# Batches: one stream fixed by the seed, shared by all chains
# --------------------------------------------------------------------------------------------


def _as_columns(data) -> tuple[tuple[torch.Tensor, ...], bool]:
    if isinstance(data, torch.Tensor):
        return (data,), True
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        n = {len(t) for t in data}
        if len(n) != 1:
            raise ValueError(f"data tensors must have the same length along dim 0, got {sorted(n)}")
        return tuple(data), False
    raise TypeError("data must be None, a Tensor, or a tuple of Tensors indexed along dim 0")


def _batches(data, batch_size: int, seed: int, device: torch.device) -> Iterator:
    """Minibatches of ``batch_size`` rows: epochs of a seeded permutation, last partial batch dropped."""
    if data is None:
        while True:
            yield None
    columns, single = _as_columns(data)
    n = len(columns[0])
    if batch_size > n:
        raise ValueError(f"SGLDConfig.batch_size m = {batch_size} exceeds the {n} rows of data")
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(n // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            cols = tuple(c[idx.to(c.device)].to(device, non_blocking=True) for c in columns)
            yield cols[0] if single else cols


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


COMPUTE_DTYPES = (None, "bfloat16")
COMPUTE_DTYPE_SETTINGS = ("auto", "float32", "bfloat16")


def _cpu_info() -> tuple[set[str], str]:
    """The CPU's feature flags and vendor id from /proc/cpuinfo (empty when unreadable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return set(), ""
    flags: set[str] = set()
    vendor = ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
        elif line.startswith("vendor_id") and not vendor:
            vendor = line.split(":", 1)[1].strip()
    return flags, vendor


def fast_bf16_support(device: str | torch.device = "cpu", cpu_flags: set[str] | None = None,
                      cpu_vendor: str | None = None) -> tuple[bool, str]:
    """Whether bf16 matmuls are faster than fp32 on ``device``, and why (a sentence for the log).

    CPU (flags and vendor read from /proc/cpuinfo unless ``cpu_flags`` / ``cpu_vendor`` are given):

    * ``amx_bf16`` (AMX tiles): yes. An early 2-core machine of this project ran bf16 matmuls at
      ~4.5x its fp32 rate, a ratio only AMX gives (its flags were not recorded).
    * ``avx512_bf16`` on an AMD CPU (Zen 4+, ``AuthenticAMD``): yes. Measured on an EPYC Zen 4: a
      512² matmul at 185 vs 87 GFLOP per CPU-second; the SGLD step 1.89x.
    * ``avx512_bf16`` on an Intel CPU without AMX (e.g. a VM that hides the tiles): **no**. Intel
      issues ``vdpbf16ps`` at half the rate of its two FMA ports, so it does no more work per cycle
      than fp32 and pays for the casts. Measured on a 2-core Xeon (family 6, model 207) with
      avx512_bf16 and no amx flag: a 512² matmul at 38 vs 76 GFLOP/s, the regression SGLD step 0.88x.
    * ``bf16`` on aarch64 (BFDOT/BFMMLA): yes (not measured here).
    * none of these: no. oneDNN then converts and runs bf16 far slower than fp32 (measured on an
      AVX2-only AMD EPYC: 1.3 vs 57 GFLOP/s for a 512² matmul on one thread).

    CUDA: compute capability >= 8.0 (Ampere and newer).
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return True, f"CUDA device with compute capability {major}.{minor} (bf16 tensor cores)"
        return False, f"CUDA compute capability {major}.{minor} < 8.0 has no fast bf16"
    if device.type != "cpu":
        return False, f"no bf16 rule for device type {device.type!r}"
    if cpu_flags is None or cpu_vendor is None:
        found_flags, found_vendor = _cpu_info()
        cpu_flags = found_flags if cpu_flags is None else cpu_flags
        cpu_vendor = found_vendor if cpu_vendor is None else cpu_vendor
    flags = set(cpu_flags)
    if "amx_bf16" in flags:
        return True, "CPU has AMX bf16 tiles (amx_bf16)"
    if "avx512_bf16" in flags:
        if cpu_vendor == "AuthenticAMD":
            return True, "AMD CPU with AVX512-BF16 (avx512_bf16: dot products at twice the fp32 FMA rate)"
        return False, (f"CPU ({cpu_vendor or 'unknown vendor'}) has avx512_bf16 but no AMX: its bf16 dot products "
                       "run no faster than fp32 FMAs (measured 0.5x on a matmul, 0.88x on an SGLD step)")
    if "bf16" in flags:
        return True, "CPU has bf16 dot-product instructions (aarch64 bf16)"
    return False, ("CPU has no bf16 dot-product instructions (no avx512_bf16 / amx_bf16 / bf16 flag in "
                   "/proc/cpuinfo): bf16 matmuls would be emulated, slower than fp32")


def resolve_compute_dtype(setting: str | None, device: str | torch.device = "cpu",
                          cpu_flags: set[str] | None = None, cpu_vendor: str | None = None) -> str | None:
    """The ``compute_dtype`` of :func:`estimate_llc` for a profile's setting.

    ``"float32"`` or None → None (the exact path, in the weights' dtype); ``"bfloat16"`` → bf16
    autocast whatever the hardware; ``"auto"`` → bf16 where :func:`fast_bf16_support` says the
    device runs it faster, else fp32, logging the reason either way.
    """
    if setting is None or setting == "float32":
        return None
    if setting == "bfloat16":
        return "bfloat16"
    if setting != "auto":
        raise ValueError(f"compute dtype setting must be one of {', '.join(COMPUTE_DTYPE_SETTINGS)} (or None = "
                         f"float32), got {setting!r}")
    fast, reason = fast_bf16_support(device, cpu_flags, cpu_vendor)
    log.info("LLC compute dtype 'auto' -> %s: %s", "bfloat16" if fast else "float32", reason)
    return "bfloat16" if fast else None


def _autocast(compute_dtype: str | None, device: torch.device, dtype: torch.dtype, cache: bool = True):
    """The context the loss's forward and backward run in: nothing (exact), or bf16 autocast."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be None (the weights' own dtype, exact) or 'bfloat16' (the loss's "
                         f"forward and backward under bf16 autocast), got {compute_dtype!r}")
    if compute_dtype is None:
        return nullcontext
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"compute_dtype='bfloat16' runs under torch.autocast on 'cpu' or 'cuda', "
                         f"not on device {device.type!r}")
    if dtype != torch.float32:
        raise ValueError(f"compute_dtype='bfloat16' needs float32 sampled weights (the fp32 master copy the chains "
                         f"keep), got {dtype}")
    # the cast cache must be off under CUDA-graph capture (cached casts would be captured once)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def _resolve_chain_mode(chain_mode: str, device: torch.device) -> str:
    if chain_mode not in ("auto", "loop", "vmap"):
        raise ValueError(f"chain_mode must be 'auto', 'loop' or 'vmap', got {chain_mode!r}")
    if chain_mode == "auto":
        # Measured (benchmarks/results/llc_benchmark.md): on an H100, 51,717-param regression
        # transformer, m = 1024: vmap 4.3 ms/step vs loop 8.2 ms. On CPU, vmap brought nothing on
        # that model (issue 4: 90 vs 73 ms) and was 17x slower than the loop on a small float64
        # linear regression (batched tiny matmuls), so the CPU default is the loop.
        return "loop" if device.type == "cpu" else "vmap"
    return chain_mode


def estimate_llc(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    config: SGLDConfig,
    data: Data = None,
    *,
    params_to_sample: Sequence[str] | Callable[[str], bool] | None = None,
    param_mask: Mapping[str, torch.Tensor] | None = None,
    chain_mode: str = "auto",
    compile: bool = False,
    compute_dtype: str | None = None,
    cuda_graph: bool = False,
    progress: bool = True,
) -> LLCResult:
    """Estimate the LLC λ̂(w*) at ``params`` = w* with SGLD (eq. 8; estimator eq. 5; traces eq. 26).

    ``loss_fn(params, batch) -> scalar Tensor`` is pure (torch.func style): ``params`` is a dict
    with every key of ``params`` (sampled weights replaced by the chain's, frozen ones as given),
    ``batch`` is ``None`` when ``data`` is None, else ``batch_size`` rows of ``data`` (a Tensor, or a
    tuple of Tensors indexed along dim 0; on the params' device).

    Weight-refined LLC: ``params_to_sample`` (names or a predicate on names) picks the tensors that
    move; ``param_mask`` ({name: bool Tensor}) restricts moves to some elements of a sampled tensor
    (e.g. one head's slice of a fused QKV matrix). Every other weight gets no gradient step, no
    localization and no noise: it stays bit-identical to w*. The data-refined LLC is this function
    with another ``data``.

    ℓ(w*) is evaluated on the same batch B_t as every draw (all chains share the batch of step t),
    so λ̂_c = nβ mean_t (ℓ_{B_t}(w_t^c) − ℓ_{B_t}(w*)): unbiased for nβ(E ℓ_n(w) − ℓ_n(w*)) like the
    paper's one-batch ℓ(w*), but without the batch noise of a single ℓ(w*) that would otherwise
    shift every chain alike (and hide from the chains' spread). Cost: one forward pass per draw
    shared by the C chains (≈ 1/(3C) of the sampling cost). devinterp instead averages ℓ(w*) over C
    batches.

    ``chain_mode``: 'loop' (chains one after another at each step), 'vmap' (torch.func.vmap over
    stacked chains) or 'auto' (loop on CPU, vmap on CUDA, chosen by measurement). ``compile``
    wraps the loss (forward + backward via AOTAutograd) in torch.compile: same mathematics,
    different float rounding; it pays off only for long runs (compile takes tens of seconds).
    ``compute_dtype``: None (default: the loss in the weights' own dtype, exact) or 'bfloat16': each
    evaluation of ``loss_fn`` — the chains' forward + backward and the ℓ(w*) of each draw alike, so
    the paired difference ℓ(w_t) − ℓ(w*) sees the same rounding — runs under ``torch.autocast``
    with bf16 (matmuls in bf16, reductions and normalisations as autocast decides), its value cast
    back to the weights' dtype. The chains' state, the noise, the localization γ(w − w*) and the
    update of eq. (8) stay fp32 (float32 weights required). A speed option (CPU cores with bf16
    dot-product instructions run bf16 matmuls ~4× faster): check the estimate against an fp32 run
    at the same seed before relying on it (benchmarks/results/llc_benchmark.md).
    ``cuda_graph`` (CUDA, vmapped chains): one whole SGLD step (ℓ(w*) on the step's batch, the
    chains' vmapped forward + backward and the eq. (8) update) is captured as a CUDA graph and
    replayed; the batch and the chains' noise (drawn eagerly from the same per-chain generators)
    are copied into its static inputs. Same mathematics and random streams as ``chain_mode='vmap'``
    (on a CPU, ``_SGLDGraph(capture=False)`` runs the same bookkeeping eagerly and is bit-identical
    to it, tested); it removes the kernel-launch overhead that bounds small models on a GPU.
    Inputs are never mutated. Non-finite or divergent chains are reported in ``diagnostics``,
    logged, and excluded from ``llc_mean``.
    """
    if not isinstance(config, SGLDConfig):
        raise TypeError(f"config must be an SGLDConfig, got {type(config).__name__}")
    layout, mask = _select(params, params_to_sample, param_mask)
    nbeta = config.resolved_nbeta(has_data=data is not None)
    device = next(iter(params.values())).device
    mode = _resolve_chain_mode(chain_mode, device)
    if cuda_graph:
        _check_graph_setting(device, mode, compile, data)
    dtype = params[layout.names[0]].dtype
    precision = _autocast(compute_dtype, device, dtype, cache=not cuda_graph)
    C, eps, gamma = config.num_chains, config.epsilon, config.gamma

    frozen = {n: t.detach() for n, t in params.items() if n not in layout.names}
    w_star = torch.cat([params[n].detach().reshape(-1) for n in layout.names]).clone()
    if mask is not None:
        mask = mask.to(device)

    def flat_loss(theta: torch.Tensor, batch) -> torch.Tensor:
        with precision():
            loss = loss_fn({**frozen, **layout.unflatten(theta)}, batch)
        _check_scalar(loss)
        return loss.reshape(()).to(dtype)  # a no-op unless autocast returned bf16

    if mode == "loop":
        def loss_of(theta, batch):
            return flat_loss(theta, batch)
        if compile:
            loss_of = torch.compile(flat_loss, dynamic=False)

        def grads(thetas: list[torch.Tensor], batch, alive: list[bool]):
            losses, gs = [], []
            for th, ok in zip(thetas, alive):
                if not ok:  # a non-finite chain stays where it is; its draws are NaN
                    losses.append(torch.tensor(float("nan"), device=device))
                    gs.append(None)
                    continue
                x = th.detach().requires_grad_(True)
                loss = loss_of(x, batch)
                (g,) = torch.autograd.grad(loss, x)
                losses.append(loss.detach())
                gs.append(g)
            return torch.stack(losses), gs
    else:
        vg = torch.func.vmap(torch.func.grad_and_value(flat_loss), in_dims=(0, None))
        if compile:
            vg = torch.compile(vg, dynamic=False)

    gens = [torch.Generator(device=device).manual_seed(derive_seed(config.seed, "noise", c)) for c in range(C)]
    batches = _batches(data, config.batch_size, config.seed, device)
    theta = w_star.unsqueeze(0).repeat(C, 1)  # [C, d]; row c is chain c
    half_eps, noise_std = eps / 2, math.sqrt(eps)
    alive = [True] * C
    losses: list[torch.Tensor] = []  # per step [C], kept on the device until the end (no per-step sync)
    losses_star: list[torch.Tensor] = []
    star_const = None

    def draw_noise(out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` [C, d] with each chain's next N(0, 1) draw from its own generator."""
        for c, gen in enumerate(gens):
            torch.randn(layout.numel, generator=gen, device=device, dtype=dtype, out=out[c])
        return out

    def update(theta, g, noise):
        # eq. (8): Δw = −ε/2 (nβ ∇ℓ_m(w) + γ (w − w*)) + N(0, ε), i.e.
        # theta + (−ε/2 · (nβ g + γ (theta − w*)) + √ε · noise), operation for operation (so bit for
        # bit), in place in two buffers: g is this step's own gradient, ``noise`` is left as drawn
        local = torch.sub(theta, w_star).mul_(gamma)
        step = g.mul_(nbeta).add_(local).mul_(-half_eps)
        step.add_(torch.mul(noise, noise_std, out=local))
        new = theta + step
        # frozen elements: where() rather than a multiply so they stay bit-identical even if Δ is inf
        return new if mask is None else torch.where(mask, new, theta)

    t0 = time.perf_counter()
    with torch.no_grad():
        if cuda_graph:
            def graph_step(theta, batch, noise):
                loss_star = flat_loss(w_star, batch).detach().reshape(())
                with torch.enable_grad():
                    g, step_losses = vg(theta, batch)
                return update(theta, g, noise), step_losses.detach().reshape(C), loss_star

            batch = next(batches)
            graphed = _SGLDGraph(graph_step, theta, batch, capture=device.type == "cuda")
            for t in tqdm(range(config.num_steps), desc="SGLD", disable=not progress, leave=False):
                if t > 0:
                    batch = next(batches)
                draw_noise(graphed.noise)
                step_losses, loss_star = graphed(batch)
                losses.append(step_losses.clone())
                if t >= config.num_burnin:
                    losses_star.append(loss_star.clone())
        else:
            noise = torch.empty_like(theta)
            for t in tqdm(range(config.num_steps), desc="SGLD", disable=not progress, leave=False):
                batch = next(batches)
                if t >= config.num_burnin:
                    if data is None:
                        if star_const is None:
                            star_const = flat_loss(w_star, None).detach().reshape(())
                        losses_star.append(star_const)
                    else:
                        losses_star.append(flat_loss(w_star, batch).detach().reshape(()))
                with torch.enable_grad():
                    if mode == "loop":
                        step_losses, gs = grads(list(theta), batch, alive)
                        g = torch.stack([x if x is not None else torch.zeros_like(w_star) for x in gs])
                    else:
                        g, step_losses = vg(theta, batch)
                theta = update(theta, g, draw_noise(noise))
                step_losses = step_losses.detach().reshape(C)
                losses.append(step_losses)
                if mode == "loop":
                    # the loop skips dead chains, so it needs to know now (one sync per step);
                    # in vmap mode a dead chain just carries its NaNs along.
                    for c, v in enumerate(step_losses.tolist()):
                        if alive[c] and not math.isfinite(v):
                            alive[c] = False
                            log.warning("SGLD chain %d has a non-finite loss at step %d; it is stopped", c, t)
    elapsed = time.perf_counter() - t0
    loss_arr = torch.stack(losses).to("cpu", torch.float64).numpy()
    star_arr = torch.stack(losses_star).to("cpu", torch.float64).numpy()
    result = _summarise(loss_arr, star_arr, config, nbeta, layout.numel if mask is None else int(mask.sum()), elapsed)
    return dataclasses.replace(result, compute_dtype=compute_dtype)


def _check_graph_setting(device: torch.device, mode: str, compile: bool, data) -> None:
    if device.type != "cuda":
        raise ValueError(f"cuda_graph=True replays the SGLD step as a CUDA graph: it needs the weights on a CUDA "
                         f"device, got {device.type!r}")
    if mode != "vmap":
        raise ValueError(f"cuda_graph=True captures the vmapped chains: chain_mode must be 'vmap' or 'auto', "
                         f"got {mode!r}")
    if compile:
        raise ValueError("cuda_graph=True and compile=True are two ways of fusing the step: choose one")
    if data is None:
        raise ValueError("cuda_graph=True needs data (a potential without data has no batch to copy in)")


class _SGLDGraph:
    """One SGLD step of all chains, ``step(theta, batch, noise) -> (theta', losses [C], ℓ(w*))``,
    captured as a CUDA graph over static ``theta`` (updated in place), batch and noise buffers.

    The caller fills ``self.noise`` in place; ``__call__(batch)`` copies the batch into the static
    batch, replays, and returns the static loss tensors (valid until the next call; the caller
    clones them). The capture's warm-up moves ``theta``, so it is put back (the first replay is
    step 0). ``capture=False`` (CPU tests of this bookkeeping) runs ``step`` eagerly on the same
    static buffers instead of replaying it.
    """

    def __init__(self, step, theta: torch.Tensor, example_batch, capture: bool = True, warmup: int = 3):
        self.theta = theta.clone()
        self.noise = torch.zeros_like(theta)  # zeros: drawing it would advance the chains' generators
        self.batch = map_batch(torch.Tensor.clone, example_batch)
        start = self.theta.clone()

        def run():
            new, losses, loss_star = step(self.theta, self.batch, self.noise)
            self.theta.copy_(new)
            return losses, loss_star

        self._run, self.graph = run, None
        with torch.no_grad():
            if capture:
                self.graph, (self.losses, self.loss_star) = cuda_graphs.capture(run, warmup)
            else:
                for _ in range(warmup):
                    run()
            self.theta.copy_(start)
        if capture:
            torch.cuda.synchronize()

    def __call__(self, batch):
        with torch.no_grad():
            copy_batch(self.batch, batch)
            if self.graph is not None:
                self.graph.replay()
            else:
                self.losses, self.loss_star = self._run()
        return self.losses, self.loss_star


def _check_scalar(loss: torch.Tensor) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar Tensor, got {type(loss).__name__} "
                         f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")


def _summarise(losses: np.ndarray, losses_star: np.ndarray, config: SGLDConfig, nbeta: float,
               num_sampled: int, elapsed: float) -> LLCResult:
    burn = config.num_burnin
    loss_trace = np.ascontiguousarray(losses[burn:].T)  # [C, draws]
    burnin_trace = np.ascontiguousarray(losses[:burn].T)
    diffs = loss_trace - losses_star[None, :]
    # eq. (26) in closed form: λ̂_τ = nβ (1/τ) Σ_{τ'≤τ} (ℓ(w_τ') − ℓ(w*))
    with np.errstate(invalid="ignore", over="ignore"):
        llc_trace = nbeta * np.cumsum(diffs, axis=1) / np.arange(1, diffs.shape[1] + 1)
        per_chain = llc_trace[:, -1].copy()
    diagnostics, messages = chain_diagnostics(nbeta * diffs, per_chain, num_sampled)
    excluded = sorted(c for c, flags in diagnostics.items() if {"nan", "divergence"} & set(flags))
    keep = [c for c in range(config.num_chains) if c not in excluded]
    for msg in messages:
        log.warning(msg)
    conv = estimate_convergence(llc_trace, excluded)
    if conv["unconverged"]:
        log.warning("SGLD estimate unconverged (%s): running estimate drifts by %.3g over the last quarter "
                    "(%.3g standard errors), chains' spread %.3g of λ̂, split-R̂ %.3g; settles within 5%% after %s of %d "
                    "draws. Run longer chains or more burn-in.", ", ".join(conv["reasons"]), conv["drift"], conv["drift_z"],
                    conv["spread"], conv["rhat"], conv["draws_to_settle"], conv["draws"])
    if not keep:
        log.warning("every SGLD chain was excluded (non-finite or divergent): llc_mean is NaN; reduce epsilon")
    mean = float(per_chain[keep].mean()) if keep else float("nan")
    std = float(per_chain[keep].std(ddof=1)) if len(keep) > 1 else float("nan")
    return LLCResult(
        llc_mean=mean, llc_std=std, llc_per_chain=per_chain, loss_trace=loss_trace, llc_trace=llc_trace,
        loss_init=float(losses_star.mean()), loss_init_trace=losses_star.copy(), burnin_loss_trace=burnin_trace,
        diagnostics=diagnostics, excluded_chains=excluded, nbeta=float(nbeta), num_sampled=num_sampled,
        config=config, elapsed_s=elapsed, messages=messages,
    )


assert set(FLAGS) == {"nan", "divergence", "not_converged", "escape"}
