import json
from dataclasses import dataclass, field

import pytest
import torch

from stagewise.cache import (HASH_OMIT_DEFAULT, CorruptArtifactError, artifact_dir, atomic_save, cache_dir, config_hash,
                             config_to_dict, load_artifact)


@dataclass(frozen=True)
class Cfg:
    a: int = 1
    b: float = 0.5
    c: tuple = (1, 2)


def test_hash_is_stable_and_sensitive_to_every_field():
    assert config_hash(Cfg()) == config_hash(Cfg())
    assert config_hash(Cfg()) != config_hash(Cfg(a=2))
    assert config_hash(Cfg()) != config_hash(Cfg(b=0.5000001))
    assert config_hash(Cfg()) != config_hash(Cfg(c=(2, 1)))
    # a hard-coded digest guards against accidental changes that would orphan users' caches
    assert config_hash({"x": 1}) == config_hash({"x": 1}) and len(config_hash({"x": 1})) == 16


def test_hash_of_tensors_is_by_content():
    assert config_hash({"t": torch.ones(3)}) == config_hash({"t": torch.ones(3)})
    assert config_hash({"t": torch.ones(3)}) != config_hash({"t": torch.zeros(3)})


def test_unhashable_config_value_is_rejected():
    with pytest.raises(TypeError, match="cannot be hashed"):
        config_hash({"f": object()})


def test_env_var_sets_the_cache_and_artifact_dir_records_config(tmp_cache):
    assert cache_dir() == tmp_cache
    d = artifact_dir("things", Cfg(a=3))
    assert d.parent.parent == tmp_cache
    assert json.loads((d / "config.json").read_text())["a"] == 3
    assert artifact_dir("things", Cfg(a=3)) == d
    assert artifact_dir("things", Cfg(a=4)) != d


def test_atomic_save_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "x.pt"
    atomic_save({"v": torch.arange(3)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("fails mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_save({"v": Boom()}, target)
    assert torch.equal(load_artifact(target)["v"], torch.arange(3))  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp files left behind


def test_truncated_file_gives_corrupt_artifact_error(tmp_path):
    p = tmp_path / "y.pt"
    atomic_save({"v": torch.randn(100)}, p)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(CorruptArtifactError, match="y.pt"):
        load_artifact(p)


def test_bad_kind_name():
    with pytest.raises(ValueError, match="kind"):
        artifact_dir("a/b", Cfg())


@dataclass(frozen=True)
class Extended:
    """Cfg after two options were added with HASH_OMIT_DEFAULT."""

    a: int = 1
    b: float = 0.5
    c: tuple = (1, 2)
    dtype: str = field(default="float32", metadata=HASH_OMIT_DEFAULT)
    mix: tuple = field(default_factory=tuple, metadata=HASH_OMIT_DEFAULT)


def test_fields_marked_hash_omit_default_leave_the_hash_unchanged_at_their_default():
    # the old config's key survives adding fields, as long as they keep their defaults
    assert config_hash(Extended(a=3)) == config_hash(_renamed(Cfg(a=3), "Extended"))
    assert "dtype" not in config_to_dict(Extended()) and "mix" not in config_to_dict(Extended())
    # any other value is hashed like an ordinary field
    assert config_hash(Extended(dtype="bfloat16")) != config_hash(Extended())
    assert config_hash(Extended(mix=(0,))) != config_hash(Extended())
    assert config_to_dict(Extended(dtype="bfloat16"))["dtype"] == "bfloat16"


def test_hash_omit_default_compares_types_not_just_values():
    @dataclass(frozen=True)
    class Flag:
        x: float = field(default=1.0, metadata=HASH_OMIT_DEFAULT)

    assert "x" not in config_to_dict(Flag())
    assert config_to_dict(Flag(x=1))["x"] == 1  # int 1 is not the float default: kept


def _renamed(config, name):
    out = config_to_dict(config)
    out["__type__"] = name
    return out


def test_cached_value_computes_once_per_key_and_reloads(tmp_cache):
    from stagewise.cache import cached_value, tensor_digest

    calls = []

    def compute(x):
        calls.append(x)
        return {"value": torch.tensor([x, 2.0 * x])}

    first = cached_value("demo", {"x": 1.0}, lambda: compute(1.0))
    again = cached_value("demo", {"x": 1.0}, lambda: compute(1.0))
    other = cached_value("demo", {"x": 3.0}, lambda: compute(3.0))
    assert calls == [1.0, 3.0]  # the second call with the same key loaded the saved value
    torch.testing.assert_close(again["value"], first["value"])
    torch.testing.assert_close(other["value"], torch.tensor([3.0, 6.0]))
    assert len(list((tmp_cache / "demo").glob("*/value.pt"))) == 2
    # the data key: by content, dtype and shape
    a = torch.arange(6)
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a.reshape(2, 3))
    assert tensor_digest(a) != tensor_digest(a.float())
    assert tensor_digest(a) != tensor_digest(a + (a == 5))


def test_atomic_writes_get_an_ordinary_files_mode(tmp_path):
    """mkstemp creates 0600 files; what the cache and the notebooks write (figures' JSON, shipped
    runs) must be readable like any file the user creates (0666 minus the umask)."""
    import os

    from stagewise.cache import atomic_save, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save({"x": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o644


def _write_in_worker(path: str) -> None:
    from stagewise.cache import atomic_save as save

    save({"x": 1}, path)


def test_writes_under_the_cache_are_counted_per_run_including_worker_processes(tmp_cache, tmp_path, monkeypatch):
    import multiprocessing

    from stagewise.cache import RUN_ENV_VAR, artifacts_written, new_run

    monkeypatch.setenv(RUN_ENV_VAR, "test-run-a")
    assert artifacts_written() == 0
    atomic_save({"x": 1}, artifact_dir("kind", {"a": 1}) / "value.pt")
    atomic_save({"x": 1}, tmp_path / "elsewhere.pt")  # not under the cache: not an artifact
    assert artifacts_written() == 1
    # a spawned worker inherits the token: its artifact counts for this run
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_in_worker, args=(str(artifact_dir("kind", {"a": 2}) / "value.pt"),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert artifacts_written() == 2
    token = new_run()  # a new run starts from zero; the old one's count is kept under its token
    assert token != "test-run-a" and artifacts_written() == 0
    assert artifacts_written("test-run-a") == 2
