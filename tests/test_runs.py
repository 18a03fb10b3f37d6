import numpy as np
import pandas as pd
import pytest

from stagewise.profiles import get_profile
from stagewise.runs import regression_hessian, regression_run, regression_run_directory


def test_regression_run_is_cached_and_hessian_curve_is_cached_per_checkpoint(tmp_cache, monkeypatch):
    reg = get_profile("regression", "smoke")
    hess = get_profile("hessian", "smoke", num_checkpoints=3, num_probes=2)
    untrained = regression_run_directory(reg, 0)
    run = regression_run(reg, 0, progress=False)
    assert run.directory.is_relative_to(tmp_cache) and run.directory == untrained
    assert regression_run_directory(reg, 1) != untrained
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


def test_hessian_through_the_predictions_only_loss_matches_the_full_forward_and_is_keyed_apart(tmp_cache):
    import dataclasses

    reg = get_profile("regression", "smoke")
    assert reg.sgld_loss == "predictions_only"
    hess = get_profile("hessian", "smoke", num_checkpoints=3, num_probes=4)
    fast = regression_hessian(reg, hess, 0, progress=False)
    full = regression_hessian(dataclasses.replace(reg, sgld_loss="full"), hess, 0, progress=False)
    # the same function of the weights: the same probes and Lanczos start give the same numbers
    np.testing.assert_allclose(fast[["trace", "trace_se", "top_eig"]].to_numpy(),
                               full[["trace", "trace_se", "top_eig"]].to_numpy(), rtol=1e-4, atol=1e-7)
    assert len({p.parent for p in (tmp_cache / "hessian").rglob("stats.pt")}) == 6  # two keys per checkpoint


def test_regression_probes_match_direct_probes_and_are_cached_per_checkpoint(tmp_cache, monkeypatch):
    from stagewise.probes import regression as P
    from stagewise.runs import regression_probe_batch, regression_probes

    reg = get_profile("regression", "smoke")
    table = regression_probes(reg, 0, num_checkpoints=3, progress=False)
    run = regression_run(reg, 0, progress=False)
    assert len(table) == 3 and table.step.iloc[0] == 0 and table.step.iloc[-1] == run.checkpoint_steps[-1]
    direct = P.probe_checkpoints(run.load_model, table.step, regression_probe_batch(reg),
                                 P.scalar_probes(reg.task.noise_variance), progress=False)
    pd.testing.assert_frame_equal(table, direct)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached probe row was recomputed")

    monkeypatch.setattr(P, "probe_checkpoint", must_not_run)
    pd.testing.assert_frame_equal(regression_probes(reg, 0, num_checkpoints=3, progress=False), table)
    with pytest.raises(AssertionError, match="recomputed"):  # a checkpoint not probed yet
        regression_probes(reg, 0, num_checkpoints=4, progress=False)


def test_language_run_with_analogue_data_trains_the_curriculum_then_the_mix(tmp_cache, monkeypatch):
    """An analogue profile (repeats + a context-length curriculum) trains on short contexts first and
    on the mixed long ones after, is cached apart from the plain run, and its LLC data carry the mix."""
    import dataclasses

    import torch

    import stagewise.train
    from stagewise.data.language import ContextCurriculum, RepeatMix, load_contexts
    from stagewise.runs import language_run, language_sgld_contexts

    plain = get_profile("language", "smoke")
    mix = RepeatMix(fraction=1.0, source="natural", seed=1, layout="scatter", segments=1, copies=2, min_length=3,
                    max_length=6)
    warm = RepeatMix(fraction=1.0, source="natural", seed=1, layout="scatter", segments=1, copies=2, min_length=2,
                     max_length=3)
    analogue = dataclasses.replace(plain, repeat_mix=mix, curriculum=ContextCurriculum(steps=6, n_ctx=8, repeat_mix=warm))
    shapes = {}
    original = stagewise.train.train

    def spy(model_fn, loss_fn, batch_fn, config, run_dir, **kwargs):
        shapes.update({step: tuple(batch_fn(step)[0].shape) for step in (0, 5, 6, config.num_steps - 1)})
        return original(model_fn, loss_fn, batch_fn, config, run_dir, **kwargs)

    monkeypatch.setattr(stagewise.train, "train", spy)
    run = language_run(analogue, progress=False)
    n, b = plain.model.n_ctx, plain.batch_size
    assert shapes[0] == shapes[5] == (b * n // 8, 8) and shapes[6] == shapes[plain.train.num_steps - 1] == (b, n)
    assert run.directory != language_run(plain, progress=False).directory
    sgld_plain = load_contexts(plain.corpus, "sgld", n).long()
    sgld_mixed = language_sgld_contexts(analogue)
    assert torch.equal(language_sgld_contexts(plain), sgld_plain)
    assert torch.equal(sgld_mixed, mix.apply(sgld_plain, 0)) and not torch.equal(sgld_mixed, sgld_plain)


@pytest.mark.slow
def test_rllc_sweep_helper_never_trains_and_computes_the_notebooks_estimates_from_the_other_end(tmp_cache,
                                                                                                monkeypatch):
    """The helper beside notebook 04 waits for the language model (never trains it), then computes
    the notebook's ablation scores and its per-head and whole-model estimates in reverse order:
    afterwards the notebook's own sweeps (forward) and ablation sections find every estimate and
    score in the cache and recompute none."""
    import dataclasses

    import stagewise.llc.sweep as sw
    import stagewise.profiles.rllc as R
    import stagewise.runs as runs

    cfg = dataclasses.replace(R.PROFILES["smoke"], heads=("0:0", "1:1"))
    monkeypatch.setitem(R.PROFILES, "smoke", cfg)
    assert runs.rllc_inputs(cfg, progress=False, train_missing=False) is None
    assert not list(tmp_cache.glob("language_runs/*/done.json"))

    real = runs.language_run
    calls = []

    def language_run(profile, progress=True, device=None, train_missing=True):
        calls.append(train_missing)
        if len(calls) == 2:  # meanwhile the notebook finishes training it
            real(profile, progress=False)
        return real(profile, progress=progress, device=device, train_missing=train_missing)

    monkeypatch.setattr(runs, "language_run", language_run)
    monkeypatch.setattr(runs, "HELPER_POLL_S", 0.0)
    runs.rllc_sweep_helper("smoke")
    assert calls == [False, False]  # waited once, then loaded; never asked to train
    monkeypatch.setattr(runs, "language_run", real)

    def must_not_run(payload):
        raise AssertionError("recomputed an estimate the helper wrote")

    monkeypatch.setattr(sw, "_run_checkpoint", must_not_run)
    inputs = runs.rllc_inputs(cfg, progress=False)
    wr, wdr = runs.rllc_head_sweeps(cfg, inputs, progress=False)
    whole = runs.rllc_whole_model_sweep(cfg, inputs, progress=False)
    assert set(wr["head"]) == {"0:0", "1:1"} and set(wr["data"]) == {"train"}
    assert set(wdr["data"]) == set(inputs.head_domains) == set(cfg.domain_names)
    assert set(whole["data"]) == {"train", *cfg.domain_names} and len(whole) == 3 * len(inputs.steps)
    assert len(wr) == 2 * len(inputs.steps) and len(wdr) == 2 * 2 * len(inputs.steps)

    def tidy(frame):
        return frame.sort_values(["data", "head", "step"]).reset_index(drop=True)

    wr_back, wdr_back = runs.rllc_head_sweeps(cfg, inputs, reverse=True, progress=False)
    pd.testing.assert_frame_equal(tidy(wr_back), tidy(wr))
    pd.testing.assert_frame_equal(tidy(wdr_back), tidy(wdr))

    import stagewise.probes.ablation as ablation_probes
    import stagewise.probes.language as language_probes

    for module, name in ((language_probes, "lm_probe_row"), (ablation_probes, "per_head_icl_scores"),
                         (ablation_probes, "tokens_in_context")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: pytest.fail(f"recomputed {_name}"))
    val, table = runs.rllc_probe_table(cfg, inputs, progress=False)
    ablation = runs.rllc_ablation_inputs(cfg, inputs, val, table)
    assert len(ablation.pair) == 2 and all(h.startswith("1:") for h in ablation.pair)
    assert ablation.final == int(inputs.steps[-1]) and ablation.k1 < ablation.k2
    icl = runs.rllc_icl_scores(inputs, ablation)
    assert list(icl.index) == sorted(int(s) for s in inputs.steps) and set(ablation.pair) <= set(icl.columns)
    tic = runs.rllc_tokens_in_context(cfg, inputs, ablation)
    assert len(tic) > 0
