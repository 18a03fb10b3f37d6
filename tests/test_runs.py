import numpy as np
import pandas as pd
import pytest

from stagewise.profiles import get_profile
from stagewise.runs import regression_hessian, regression_run


def test_regression_run_is_cached_and_hessian_curve_is_cached_per_checkpoint(tmp_cache, monkeypatch):
    reg = get_profile("regression", "smoke")
    hess = get_profile("hessian", "smoke", num_checkpoints=3, num_probes=2)
    run = regression_run(reg, 0, progress=False)
    assert run.directory.is_relative_to(tmp_cache)
    first = regression_hessian(reg, hess, 0, progress=False)
    assert list(first.index) == sorted(first.index) and len(first) == 3
    assert np.all(np.isfinite(first[["trace", "trace_se", "top_eig"]].to_numpy()))

    import stagewise.hessian

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached Hessian statistic was recomputed")

    monkeypatch.setattr(stagewise.hessian, "module_hessian_statistics", must_not_run)
    pd.testing.assert_frame_equal(regression_hessian(reg, hess, 0, progress=False), first)
    with pytest.raises(AssertionError, match="recomputed"):
        regression_hessian(reg, get_profile("hessian", "smoke", num_checkpoints=3, num_probes=3), 0, progress=False)
