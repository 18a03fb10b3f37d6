"""Training runs shipped with the repository, for the `long` profile.

A run that a 2-core CPU cannot redo within a profile's budget (the regression model's 500k steps at
`long`: ≈ 4–7 h on one core, for each residual stream) lives in ``data/runs/<name>.pt`` (every checkpoint in fp32, the
per-step training loss, the run's ``done.json``) beside ``data/runs/<name>.json``, its manifest:

* ``sha256`` and ``bytes`` of the ``.pt`` file;
* ``kind`` and ``config_hash`` of the artifact-cache entry it stands for (the hash of the run's
  key: task, model, training config, batch, seed) and that key in full (``config``);
* ``checkpoint_digests``: a digest of every checkpoint's weights, to check a retrained run against;
* ``trained_on``: device, CPU, torch version, threads, training seconds (and where they come from).
  The manifest also carries ``packed`` (the date) and a free-text ``note``.

:func:`load_shipped` is what :func:`stagewise.runs.regression_run` calls when the cache has no
trained run of that key: it finds the manifest whose ``kind`` and ``config_hash`` match, checks the
file's SHA-256, unpacks it into the cache (``<cache>/shipped_runs/<hash>/``, laid out like a trained
run) and says so in a log line. A file that does not match its manifest, or whose contents belong to
another config, is an error naming the file, never silently replaced by training. Retraining stays one
option away (``RegressionProfile(use_shipped_run=False)``, notebook parameter ``retrain``):
:func:`check_against_manifest` then compares the new run with the shipped one, bit for bit where the
platform is the same (device, torch, threads), by the size of the differences elsewhere.
:func:`pack_run` writes a file and its manifest from a finished run (``python -m stagewise.shipped``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stagewise.cache import atomic_save, atomic_write_text, artifact_dir, config_hash, config_to_dict, load_artifact

__all__ = ["ShippedRunError", "shipped_dir", "find_manifest", "load_shipped", "pack_run", "state_digest",
           "check_against_manifest", "run_identity", "platform_info"]

log = logging.getLogger(__name__)

ENV_VAR = "STAGEWISE_SHIPPED_RUNS"
FORMAT = 1
INSTALLED_KIND = "shipped_runs"


class ShippedRunError(RuntimeError):
    """A shipped run's file is missing, corrupt, or does not match its manifest or its config."""


def shipped_dir() -> Path:
    """``data/runs`` of the repository (override: ``$STAGEWISE_SHIPPED_RUNS``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "runs"


def platform_info(device: str = "cpu") -> dict:
    """Where a run was trained: device, CPU model, torch version, threads (what bit-reproduction needs)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = str(device)
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev = f"cuda ({torch.cuda.get_device_name(0)})"
    return {"device": dev, "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_manifest(kind: str, key: Any, directory: Path | None = None) -> tuple[dict, Path] | None:
    """The manifest (and its path) of the shipped run for cache entry ``kind`` / ``key``, or None."""
    directory = shipped_dir() if directory is None else Path(directory)
    if not directory.is_dir():
        return None
    want = config_hash(key)
    for path in sorted(directory.glob("*.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShippedRunError(f"shipped-run manifest {path} cannot be read ({exc}); restore it from git") from exc
        if manifest.get("kind") == kind and manifest.get("config_hash") == want:
            return manifest, path
    return None


def pack_run(run_dir: Path, kind: str, key: Any, name: str, out_dir: Path | None = None, trained_on: dict | None = None,
             note: str = "", seconds: float | None = None) -> Path:
    """Write ``<out_dir>/<name>.pt`` (all checkpoints stacked per parameter, fp32; the loss history;
    done.json) and its manifest ``<name>.json`` from the finished run in ``run_dir``. Returns the
    manifest's path. The manifest's training ``seconds`` are done.json's, or ``seconds`` where given
    (a resumed run whose record lacks the earlier pieces' time); the manifest says which."""
    run_dir = Path(run_dir)
    out_dir = shipped_dir() if out_dir is None else Path(out_dir)
    done = json.loads((run_dir / "done.json").read_text())
    steps = [int(s) for s in done["checkpoint_steps"]]
    states = [load_artifact(run_dir / "checkpoints" / f"step_{s:08d}.pt") for s in steps]
    names = list(states[0])
    for s, state in zip(steps, states):
        if list(state) != names:
            raise ShippedRunError(f"checkpoint {s} of {run_dir} has other parameters than step {steps[0]}")
        if any(t.dtype != torch.float32 for t in state.values()):
            raise ShippedRunError(f"checkpoint {s} of {run_dir} is not float32")
    payload = {
        "format": FORMAT, "kind": kind, "config_hash": config_hash(key), "steps": torch.tensor(steps),
        "params": {n: torch.stack([st[n] for st in states]).contiguous() for n in names},
        "loss": load_artifact(run_dir / "history.pt")["loss"].float(), "done": done,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / f"{name}.pt"
    atomic_save(payload, pt)
    manifest = {
        "name": name, "file": pt.name, "bytes": pt.stat().st_size, "sha256": _file_sha256(pt), "format": FORMAT,
        "kind": kind, "config_hash": config_hash(key), "config": config_to_dict(key), "checkpoints": len(steps),
        "first_step": steps[0], "last_step": steps[-1],
        "checkpoint_digests": {str(s): state_digest(st) for s, st in zip(steps, states)},
        "final_loss_mean_last_1pct": float(payload["loss"][-max(1, len(payload["loss"]) // 100):].mean()),
        "trained_on": {**(trained_on or platform_info()),
                       "seconds": done.get("seconds") if seconds is None else float(seconds),
                       "seconds_from": "the run's done.json" if seconds is None else "given when packed (pack_run's seconds)",
                       **({"seconds_last_piece": done["seconds_last_piece"]} if "seconds_last_piece" in done else {})},
        "packed": time.strftime("%Y-%m-%d"), "note": note,
    }
    path = out_dir / f"{name}.json"
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    log.info("packed %s (%d checkpoints, %.1f MB) and its manifest %s", pt, len(steps), pt.stat().st_size / 1e6, path)
    return path


def _unpack(manifest: dict, manifest_path: Path, directory: Path) -> None:
    pt = manifest_path.parent / manifest["file"]
    if not pt.exists():
        raise ShippedRunError(f"shipped run {pt} named by {manifest_path} is missing (git lfs or a partial clone?)")
    digest = _file_sha256(pt)
    if digest != manifest["sha256"]:
        raise ShippedRunError(f"shipped run {pt} is corrupt: SHA-256 {digest[:16]}... does not match its manifest "
                              f"{manifest_path.name} ({manifest['sha256'][:16]}...); restore it with git checkout")
    payload = torch.load(pt, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT or payload.get("config_hash") != manifest["config_hash"]:
        raise ShippedRunError(f"shipped run {pt} holds config {payload.get('config_hash')} (format "
                              f"{payload.get('format')}), its manifest says {manifest['config_hash']} (format {FORMAT})")
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    steps = payload["steps"].tolist()
    for i, s in enumerate(steps):
        torch.save({n: t[i].clone() for n, t in payload["params"].items()}, tmp / "checkpoints" / f"step_{s:08d}.pt")
    torch.save({"loss": payload["loss"]}, tmp / "history.pt")
    (tmp / "config.json").write_text(json.dumps(manifest["config"], indent=1))
    (tmp / "shipped.json").write_text(json.dumps({"manifest": manifest_path.name, "sha256": manifest["sha256"]}))
    (tmp / "done.json").write_text(json.dumps(payload["done"]))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def load_shipped(kind: str, key: Any, model_fn=None, shipped: Path | None = None):
    """The shipped run of cache entry ``kind`` / ``key`` as a :class:`~stagewise.train.TrainedRun`
    (unpacked into ``<cache>/shipped_runs/`` on first use, with a log line), or None when none is shipped."""
    from stagewise.train import TrainedRun

    found = find_manifest(kind, key, shipped)
    if found is None:
        return None
    manifest, manifest_path = found
    directory = artifact_dir(INSTALLED_KIND, {"kind": kind, "key": config_to_dict(key)})
    marker = directory / "shipped.json"
    if not (marker.exists() and json.loads(marker.read_text()).get("sha256") == manifest["sha256"]):
        t0 = time.perf_counter()
        _unpack(manifest, manifest_path, directory)
        on = manifest["trained_on"]
        log.warning("loaded the shipped run %s (%d checkpoints, trained on %s with torch %s) into the cache in %.1f s "
                    "instead of training it; to retrain, pass use_shipped_run=False (notebook parameter retrain=True)",
                    manifest_path.parent / manifest["file"], manifest["checkpoints"], on.get("device"), on.get("torch"),
                    time.perf_counter() - t0)
    run = TrainedRun(directory, model_fn)
    run.shipped_manifest = manifest
    return run


def run_identity(run) -> dict:
    """Extra cache-key fields for analyses keyed by a run's config rather than its weights: empty
    for a run trained here (so existing keys stay valid), the shipped file's SHA-256 otherwise (a
    shipped run and one retrained elsewhere share a config but not their weights)."""
    manifest = getattr(run, "shipped_manifest", None)
    return {} if manifest is None else {"shipped_sha256": manifest["sha256"][:16]}


def check_against_manifest(run, kind: str, key: Any, device: str = "cpu", shipped: Path | None = None) -> dict | None:
    """Compare a (re)trained ``run`` with the shipped run of the same key: per-checkpoint weight
    digests, and where they differ the largest weight difference (relative to the weights' norm) and
    the final training loss of both. ``same_platform`` says whether bit-identity is to be expected
    (same device, torch and threads). Written to ``<run dir>/shipped_check.json`` and logged; None
    when nothing is shipped for this key. Raises :class:`ShippedRunError` when the platform is the
    same but the weights differ (a real difference in code or data, not rounding)."""
    found = find_manifest(kind, key, shipped)
    if found is None:
        return None
    manifest, manifest_path = found
    here = platform_info(device)
    on = manifest["trained_on"]
    same = all(here.get(k) == on.get(k) for k in ("device", "cpu", "torch", "threads"))
    digests = {str(int(s)): state_digest(run.load_state(int(s))) for s in run.checkpoint_steps}
    equal = [s for s, d in digests.items() if manifest["checkpoint_digests"].get(s) == d]
    result = {"manifest": manifest_path.name, "same_platform": same, "here": here, "shipped_on": on,
              "checkpoints": len(digests), "identical_checkpoints": len(equal),
              "identical": len(equal) == len(digests) == manifest["checkpoints"]}
    if not result["identical"]:
        shipped_run = load_shipped(kind, key, shipped=shipped)
        last = int(run.checkpoint_steps[-1])
        a, b = run.load_state(last), shipped_run.load_state(last)
        diff = max(float((a[n] - b[n]).abs().max()) for n in a)
        norm = max(float(b[n].abs().max()) for n in b)
        result.update({"first_differing_checkpoint": next((int(s) for s in digests if s not in equal), None),
                       "last_checkpoint_max_abs_diff": diff, "last_checkpoint_max_abs_weight": norm,
                       "final_loss_retrained": float(np.mean(run.train_loss[-max(1, len(run.train_loss) // 100):])),
                       "final_loss_shipped": manifest["final_loss_mean_last_1pct"]})
    atomic_write_text(Path(run.directory) / "shipped_check.json", json.dumps(result, indent=1))
    log.warning("retrained run against the shipped %s: %d of %d checkpoints bit-identical (%s platform)%s",
                manifest_path.name, len(equal), len(digests), "same" if same else "another",
                "" if result["identical"] else f"; final loss {result['final_loss_retrained']:.4f} here, "
                f"{result['final_loss_shipped']:.4f} shipped")
    if same and not result["identical"]:
        raise ShippedRunError(f"the run retrained on the shipped run's platform differs from {manifest_path.name} "
                              f"from checkpoint {result['first_differing_checkpoint']} on: a change in code or data")
    return result


def main(argv=None) -> None:
    """``python -m stagewise.shipped pack --setting regression --profile long --seed 0 --name NAME``:
    pack the cached trained run of that profile and seed into data/runs/."""
    import argparse
    from dataclasses import replace

    from stagewise.profiles import get_profile
    from stagewise.runs import _regression_key

    ap = argparse.ArgumentParser(prog="python -m stagewise.shipped")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--profile", default="long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", required=True)
    p.add_argument("--device", default="cpu", help="where the run was trained (for the manifest)")
    p.add_argument("--threads", type=int, default=None, help="threads it was trained with (default: this process's)")
    p.add_argument("--residual", default=None, choices=("standard", "paper_code"),
                   help="the run's residual stream (default: the profile's)")
    p.add_argument("--seconds", type=float, default=None,
                   help="training time in seconds for the manifest, where the run's own record lacks it (a run "
                        "resumed from a resume point older than the clock kept across pieces): the pieces' sum")
    p.add_argument("--note", default="")
    args = ap.parse_args(argv)
    if args.seconds is not None and not args.seconds > 0:
        raise SystemExit(f"--seconds must be > 0, got {args.seconds}")
    logging.basicConfig(level=logging.INFO)
    profile = get_profile("regression", args.profile)
    if args.residual is not None:
        profile = replace(profile, model=replace(profile.model, residual=args.residual))
    key = _regression_key(profile, args.seed)
    run_dir = artifact_dir("regression_runs", key)
    if not (run_dir / "done.json").exists():
        raise SystemExit(f"no finished run in {run_dir}: train it first (regression_run)")
    info = platform_info(args.device)
    if args.threads is not None:
        info["threads"] = args.threads
    print(pack_run(run_dir, "regression_runs", key, args.name, trained_on=info, note=args.note, seconds=args.seconds))


if __name__ == "__main__":
    main()
