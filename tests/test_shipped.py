"""Runs shipped with the repository (stagewise.shipped): pack, load into the cache instead of
training, refuse a corrupt or mismatched file by name, retrain and check against the manifest."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from stagewise import shipped
from stagewise.cache import artifact_dir
from stagewise.profiles import get_profile
from stagewise.runs import _regression_key, regression_run


@pytest.fixture
def setting(tmp_cache, tmp_path, monkeypatch):
    """A smoke-profile run trained into a fresh cache and packed into a private data/runs; the
    trained cache entry is then removed, so only the shipped file can provide the run."""
    monkeypatch.setenv(shipped.ENV_VAR, str(tmp_path / "runs"))
    profile = get_profile("regression", "smoke")
    trained = regression_run(profile, 0, progress=False)
    key = _regression_key(profile, 0)
    states = {int(s): trained.load_state(int(s)) for s in trained.checkpoint_steps}
    manifest_path = shipped.pack_run(trained.directory, "regression_runs", key, "smoke_seed0")
    loss = trained.train_loss.copy()
    shutil.rmtree(trained.directory)
    return profile, key, states, loss, manifest_path


def test_a_shipped_run_is_loaded_instead_of_trained_with_a_log_line(setting, caplog):
    profile, key, states, loss, manifest_path = setting
    manifest = json.loads(manifest_path.read_text())
    assert manifest["checkpoints"] == len(states) and manifest["config_hash"] and len(manifest["sha256"]) == 64
    with caplog.at_level(logging.WARNING, logger="stagewise.shipped"):
        run = regression_run(profile, 0, progress=False)
    assert "loaded the shipped run" in caplog.text and "smoke_seed0.pt" in caplog.text
    assert not (artifact_dir("regression_runs", key) / "done.json").exists()  # nothing was trained
    assert set(run.checkpoint_steps.tolist()) == set(states)
    for step, state in states.items():
        got = run.load_state(step)
        assert all(torch.equal(got[n], state[n]) for n in state)
    np.testing.assert_array_equal(run.train_loss, loss)
    assert run.load_model(int(run.checkpoint_steps[-1])) is not None
    assert shipped.run_identity(run) == {"shipped_sha256": manifest["sha256"][:16]}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stagewise.shipped"):
        regression_run(profile, 0, progress=False)  # already unpacked: no second unpacking
    assert "loaded the shipped run" not in caplog.text


def test_a_corrupt_or_mismatched_shipped_file_is_an_error_naming_it(setting):
    profile, key, _, _, manifest_path = setting
    pt = manifest_path.with_suffix(".pt")
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(shipped.ShippedRunError, match="smoke_seed0.pt is corrupt"):
        regression_run(profile, 0, progress=False)
    pt.unlink()
    with pytest.raises(shipped.ShippedRunError, match="smoke_seed0.pt .* is missing"):
        regression_run(profile, 0, progress=False)


def test_a_file_holding_another_config_is_refused(setting, tmp_path):
    profile, key, _, _, manifest_path = setting
    pt = manifest_path.with_suffix(".pt")
    payload = torch.load(pt, weights_only=True)
    payload["config_hash"] = "0" * 16
    torch.save(payload, pt)
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"], manifest["bytes"] = shipped._file_sha256(pt), pt.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(shipped.ShippedRunError, match="holds config 0000000000000000"):
        regression_run(profile, 0, progress=False)


def test_retraining_checks_the_result_against_the_manifest(setting):
    profile, key, states, _, manifest_path = setting
    retrain = dataclasses.replace(profile, use_shipped_run=False)
    run = regression_run(retrain, 0, progress=False)  # trains: the shipped run is not used
    assert (artifact_dir("regression_runs", key) / "done.json").exists()
    check = json.loads((run.directory / "shipped_check.json").read_text())
    # the same machine, torch and threads as when it was packed: bit-identical, as the check expects
    assert check["same_platform"] and check["identical"] and check["identical_checkpoints"] == len(states)
    # the same platform but other weights: a real difference, reported as an error
    manifest = json.loads(manifest_path.read_text())
    last = str(max(states))
    manifest["checkpoint_digests"][last] = "0" * 16
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(shipped.ShippedRunError, match=f"from checkpoint {last} on"):
        shipped.check_against_manifest(run, "regression_runs", key)
    # on another platform the same difference is only reported, with its size
    manifest["trained_on"]["device"] = "cuda (another GPU)"
    manifest_path.write_text(json.dumps(manifest))
    result = shipped.check_against_manifest(run, "regression_runs", key)
    assert not result["same_platform"] and not result["identical"]
    assert result["first_differing_checkpoint"] == int(last)
    assert result["last_checkpoint_max_abs_diff"] == 0.0  # the file itself still holds the same weights


def test_a_run_trained_here_wins_over_the_shipped_one(setting):
    profile, key, _, _, _ = setting
    trained = regression_run(dataclasses.replace(profile, use_shipped_run=False), 0, progress=False)
    again = regression_run(profile, 0, progress=False)
    assert again.directory == trained.directory and shipped.run_identity(again) == {}


def test_no_manifest_for_other_keys(setting):
    profile, _, _, _, _ = setting
    other = _regression_key(profile, 1)
    assert shipped.find_manifest("regression_runs", other) is None
    assert shipped.find_manifest("language_runs", _regression_key(profile, 0)) is None


def test_the_pack_command_packs_the_named_residual_with_the_given_seconds(tmp_cache, tmp_path, monkeypatch):
    from stagewise.cache import config_hash

    monkeypatch.setenv(shipped.ENV_VAR, str(tmp_path / "runs"))
    base = get_profile("regression", "smoke")
    doubled = dataclasses.replace(base, model=dataclasses.replace(base.model, residual="paper_code"))
    regression_run(doubled, 0, progress=False)
    args = ["pack", "--profile", "smoke", "--seed", "0", "--name", "doubled"]
    with pytest.raises(SystemExit, match="--seconds must be > 0"):
        shipped.main([*args, "--residual", "paper_code", "--seconds", "-1"])
    with pytest.raises(SystemExit, match="train it first"):  # the profile's own (standard) run was not trained
        shipped.main(args)
    shipped.main([*args, "--residual", "paper_code", "--seconds", "123.5"])
    manifest = json.loads((tmp_path / "runs" / "doubled.json").read_text())
    assert manifest["config"]["model"]["residual"] == "paper_code"
    assert manifest["config_hash"] == config_hash(_regression_key(doubled, 0)) != config_hash(_regression_key(base, 0))
    assert manifest["trained_on"]["seconds"] == 123.5 and "given" in manifest["trained_on"]["seconds_from"]
    assert manifest["trained_on"]["seconds_last_piece"] > 0  # done.json's, beside the given total
