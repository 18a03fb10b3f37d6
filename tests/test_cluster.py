"""Pointing a notebook's LLC sweeps at an existing Dask scheduler (stagewise.cluster)."""

from functools import partial

import numpy as np
import pytest
import torch

from stagewise.cluster import SCHEDULER_ENV, scheduler_address, sweep_executor
from stagewise.data.regression import RegressionTask, regression_forward_loss, sgld_dataset
from stagewise.llc import SGLDConfig, estimate_llc_sweep
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig

MODEL = RegressionTransformerConfig(task_size=2, max_examples=4, n_layers=1, n_heads=2, d_embed=8, d_mlp=8)
MODEL_FN = partial(RegressionTransformer, MODEL)
CFG = SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=2, num_draws=20, num_burnin=5, batch_size=32)


def _checkpoints(n):
    out = []
    for step in range(n):
        torch.manual_seed(step)
        out.append((step, {k: v.clone() for k, v in MODEL_FN().state_dict().items()}))
    return out


def test_no_address_means_serial(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert sweep_executor() == "serial"
    monkeypatch.setenv(SCHEDULER_ENV, "   ")
    assert sweep_executor() == "serial" and scheduler_address() is None
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://example:8786")
    assert scheduler_address() == "tcp://example:8786"
    assert scheduler_address("tcp://other:1") == "tcp://other:1"  # the argument wins over the variable
    with pytest.raises(TypeError, match="address"):
        scheduler_address(8786)


def test_unreachable_scheduler_is_an_error_naming_it(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    with pytest.raises(OSError, match="tcp://127.0.0.1:9"):
        sweep_executor("tcp://127.0.0.1:9", timeout=2)


@pytest.mark.slow
def test_sweeps_run_on_an_existing_local_cluster_named_by_the_environment(monkeypatch, tmp_cache):
    """The docs' Dask example (docs/scale.md) on a LocalCluster: the scheduler's address in $STAGEWISE_DASK_SCHEDULER,
    sweep_executor() connects, the sweep runs on the cluster's worker and equals the serial one; the
    notebook's process writes the cache."""
    from distributed import LocalCluster

    data = sgld_dataset(RegressionTask(task_size=2, max_examples=4), 256)
    cks = _checkpoints(2)
    serial = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, cache=False, progress=False)
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
        client = sweep_executor()
        try:
            assert type(client).__name__ == "Client" and client.scheduler.address == cluster.scheduler_address
            sweep = estimate_llc_sweep(cks, MODEL_FN, regression_forward_loss, data, CFG, executor=client,
                                       progress=False)
            ran_on = client.run(lambda: 1)  # {worker address: 1}: the work had somewhere to go
        finally:
            client.close()
    assert len(ran_on) == 1
    np.testing.assert_allclose(sweep.llc_mean, serial.llc_mean, rtol=1e-5)
    assert len(list(tmp_cache.glob("llc/*/result.pt"))) == 2
