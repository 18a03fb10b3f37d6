"""Device and core choices: named errors, affinity-sized pools, batches moved with their structure."""

import os

import pytest
import torch

from stagewise.data.regression import RegressionBatch
from stagewise.hardware import available_cores, default_device, resolve_device
from stagewise.train import _to_device


def test_cores_follow_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cores() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert available_cores() == len(before)


def test_devices_resolve_or_fail_by_name():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device(default_device())
    if not torch.cuda.is_available():
        assert default_device() == "cpu"
        with pytest.raises(ValueError, match="'cuda'.*no CUDA device"):
            resolve_device("cuda")


def test_batches_move_with_their_structure():
    b = RegressionBatch(torch.zeros(2, 4, 3), torch.zeros(2, 2), torch.zeros(2, 2, 2), torch.zeros(2, 2))
    moved = _to_device(b, torch.device("cpu"))
    assert isinstance(moved, RegressionBatch) and moved.tokens.shape == (2, 4, 3)
    pair = _to_device((torch.ones(1), [torch.zeros(2)]), torch.device("cpu"))
    assert isinstance(pair, tuple) and isinstance(pair[1], list) and pair[1][0].shape == (2,)
