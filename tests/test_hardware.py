"""Device and core choices: named errors, affinity-sized pools, batches moved with their structure."""

import os
import platform
import sys

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


def test_malloc_environment_adds_the_settings_unless_set_or_declined():
    from stagewise.hardware import MALLOC_SETTINGS, malloc_environment

    env = malloc_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", **MALLOC_SETTINGS}
    assert malloc_environment({"MALLOC_MMAP_MAX_": "7"})["MALLOC_MMAP_MAX_"] == "7"  # the user's own wins
    assert malloc_environment({"STAGEWISE_MALLOC": "system"}) == {"STAGEWISE_MALLOC": "system"}
    with pytest.raises(ValueError, match="STAGEWISE_MALLOC.*'tuned' or 'system'.*'fast'"):
        malloc_environment({"STAGEWISE_MALLOC": "fast"})


_FAULTS = """
import resource, torch
torch.set_num_threads(1)
x, w = torch.randn(2048, 256), torch.randn(256, 8192)
for i in range(12):
    if i == 8:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (x @ w).log_softmax(-1)  # two 64 MiB tensors per step: above glibc's largest mmap threshold
    del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's allocator only")
def test_the_settings_stop_glibc_from_faulting_in_each_large_block_again():
    """The mechanism itself, on the pattern of a training or Hessian step: a step that makes two
    64 MiB tensors page-faults them in again at every step under the default allocator (16,384
    pages each), and, once the heap has settled, not at all with freed memory kept."""
    import subprocess

    from stagewise.hardware import malloc_environment

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(env):
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout.strip())  # over the last four of twelve steps

    assert faults({**base, "STAGEWISE_MALLOC": "system"}) > 4 * 16_000
    assert faults(malloc_environment(base)) < 1_000


def test_machine_description_names_cores_cpu_and_sgld_dtype():
    from stagewise.hardware import machine_description
    from stagewise.llc.sampler import fast_bf16_support

    text = machine_description("cpu")
    assert text.startswith(f"{os.cpu_count()}-core ")
    assert ("SGLD in bf16" if fast_bf16_support("cpu")[0] else "SGLD in fp32") in text


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores and affinity")
def test_machine_description_of_a_pinned_process_names_the_machines_cores_and_the_ones_used():
    from stagewise.hardware import machine_description

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        text = machine_description("cpu")
    finally:
        os.sched_setaffinity(0, before)
    assert text.startswith(f"{os.cpu_count()}-core ") and text.endswith(", 1 core used")
