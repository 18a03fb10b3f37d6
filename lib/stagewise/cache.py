"""Artifact cache: expensive results (checkpoints, LLC sweeps) on disk, keyed by their config.

Layout::

    <cache_dir>/<kind>/<config-hash>/config.json   # the config that produced the artifact
    <cache_dir>/<kind>/<config-hash>/...           # files written by the producer

``cache_dir()`` is ``$STAGEWISE_CACHE`` if set, else ``<repo>/.cache/stagewise`` when running
from a checkout (ignored by git), else ``~/.cache/stagewise``.

Every write goes through :func:`atomic_save` / :func:`atomic_write_text`: the data is written to a
temporary file in the same directory, flushed to disk, then renamed over the target, so a killed
run never leaves a half-written file under a real name.

Every write under the cache is also counted for the current *run* (:func:`artifacts_written`): a
process tree that shares the ``STAGEWISE_RUN_TOKEN`` environment variable (a notebook's kernel and
the worker processes it starts) appends one line per artifact to ``<cache_dir>/.runs/<token>``.
``stagewise-figures`` gives each notebook a fresh token (:func:`new_run`); a kernel opened by hand gets
one when it first imports this module. The headline writer uses the count to tell a run that
computed something from a rerun served entirely from the cache, whose seconds say nothing about
the computation (:func:`stagewise.headline.write_headline`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "HASH_OMIT_DEFAULT",
    "CorruptArtifactError",
    "cache_dir",
    "config_hash",
    "config_to_dict",
    "artifact_dir",
    "atomic_save",
    "atomic_write_text",
    "load_artifact",
    "cached_value",
    "tensor_digest",
    "new_run",
    "run_token",
    "artifacts_written",
]

ENV_VAR = "STAGEWISE_CACHE"
RUN_ENV_VAR = "STAGEWISE_RUN_TOKEN"

# Field metadata for options added to a config after runs were cached under it:
# ``x: int = field(default=0, metadata=HASH_OMIT_DEFAULT)`` leaves ``x`` out of config_to_dict (so
# out of the hash and config.json) while it equals its default, so every existing cache key stays
# valid; any other value is hashed like an ordinary field.
HASH_OMIT_DEFAULT = {"hash_omit_default": True}


class CorruptArtifactError(RuntimeError):
    """A cached file exists but cannot be read; delete it (the message says which) to recompute."""


def _repo_root() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "lib" / "stagewise").exists():
            return parent
    return None


def cache_dir() -> Path:
    """Root of the artifact cache (created on demand)."""
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
    else:
        repo = _repo_root()
        root = repo / ".cache" / "stagewise" if repo else Path.home() / ".cache" / "stagewise"
    root.mkdir(parents=True, exist_ok=True)
    return root


def config_to_dict(config: Any) -> Any:
    """A JSON-able, canonical view of a config (dataclasses, dicts, tuples, enums, numbers).

    Dataclass fields whose metadata has ``hash_omit_default`` (:data:`HASH_OMIT_DEFAULT`) are left
    out while they equal their default.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        out = {"__type__": type(config).__name__}
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if f.metadata.get("hash_omit_default") and _equals_default(f, value):
                continue
            out[f.name] = config_to_dict(value)
        return out
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in sorted(config.items(), key=lambda kv: str(kv[0]))}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, enum.Enum):
        return config.value
    if isinstance(config, float):
        if math.isnan(config) or math.isinf(config):
            return repr(config)
        return config
    if isinstance(config, (str, int, bool)) or config is None:
        return config
    if isinstance(config, Path):
        return str(config)
    if isinstance(config, torch.Tensor):
        # Tensors in a config are hashed by content, not identity.
        return {"__tensor__": hashlib.sha256(config.detach().cpu().contiguous().numpy().tobytes()).hexdigest(),
                "shape": list(config.shape), "dtype": str(config.dtype)}
    raise TypeError(f"config value of type {type(config).__name__} cannot be hashed: {config!r}")


def _equals_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        raise TypeError(f"field {f.name!r} is marked hash_omit_default but has no default")
    # compared by canonical form, so 1 == 1.0 == True style coincidences cannot drop a field
    return config_to_dict(value) == config_to_dict(default) and type(value) is type(default)


def config_hash(config: Any, length: int = 16) -> str:
    """Stable hex digest of a config: equal configs give equal hashes across runs and machines."""
    blob = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def artifact_dir(kind: str, config: Any, root: Path | None = None) -> Path:
    """Directory for the artifact of ``kind`` produced by ``config``; writes ``config.json`` once."""
    if not kind or "/" in kind:
        raise ValueError(f"kind must be a non-empty name without '/', got {kind!r}")
    path = (root or cache_dir()) / kind / config_hash(config)
    path.mkdir(parents=True, exist_ok=True)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        atomic_write_text(cfg_file, json.dumps(config_to_dict(config), indent=2, sort_keys=True))
    return path


def new_run() -> str:
    """Start a new run: a fresh token in ``os.environ`` (inherited by processes started afterwards)."""
    token = f"{os.getpid()}-{time.time_ns()}"
    os.environ[RUN_ENV_VAR] = token
    return token


def run_token() -> str:
    """This process tree's run token (a new one if none was inherited)."""
    token = os.environ.get(RUN_ENV_VAR, "")
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        token = new_run()
    return token


def _runs_log(token: str | None = None) -> Path:
    return cache_dir() / ".runs" / (token or run_token())


def artifacts_written(token: str | None = None) -> int:
    """How many artifacts the run ``token`` (default: this process tree's) wrote under the cache."""
    try:
        with open(_runs_log(token), "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _record_write(path: Path) -> None:
    try:
        root = cache_dir().resolve()
        rel = path.resolve().relative_to(root)
    except ValueError:  # not under the cache (figures, headline JSON, shipped runs)
        return
    if (rel.parts and rel.parts[0] == ".runs") or rel.name == "config.json":
        return  # the run log itself; an artifact's config (written on lookup too) is not a result
    log = _runs_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    # One short O_APPEND write per artifact: lines from concurrent workers do not interleave.
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, (str(rel) + "\n").encode())
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file an ordinary file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _record_write(path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    _atomic_replace(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_replace(path, lambda fh: fh.write(text.encode()))


def load_artifact(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with a clear error naming the file when it is truncated or not a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no artifact at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CorruptArtifactError(
            f"cached artifact {path} is corrupt or not a stagewise checkpoint ({type(exc).__name__}: {exc}); "
            f"delete it to recompute"
        ) from exc


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 (16 hex digits) of a tensor's dtype, shape and bytes: a cache key for data."""
    t = torch.as_tensor(tensor).detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def cached_value(kind: str, key: Any, compute: Callable[[], Any], root: Path | None = None) -> Any:
    """``compute()`` once per ``key``: its result is saved atomically under ``artifact_dir(kind, key)``
    and loaded on every later call. For cheap-to-key, minutes-to-compute notebook results (ablation
    scores, toy-potential LLCs); ``key`` must name everything the result depends on (weights and data
    by :func:`tensor_digest` / ``weights_digest``, settings, a version)."""
    path = artifact_dir(kind, key, root) / "value.pt"
    if path.exists():
        return load_artifact(path)
    value = compute()
    atomic_save(value, path)
    return value


run_token()  # before any worker process starts, so that the workers inherit it
