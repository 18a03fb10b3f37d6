"""The `paper` profile of every notebook runs (issue #18): its configurations build, and a couple of
real training and SGLD steps run at the paper's model shapes (the batch cut to fit a CPU), so a
configuration that cannot run fails here, not after hours on a GPU. Also the paper's corpus: a
budget of 5.12B training tokens that the offline corpus refuses at once."""

import dataclasses
import json
import math

import pytest
import torch

from stagewise.data.corpus import (OFFLINE_TRAIN_TOKENS_MAX, PAPER_CORPUS_ENV, CorpusBudgetError, CorpusConfig,
                                   build_corpus, load_corpus, paper_corpus, shard_files)
from stagewise.data.language import LMBatches, load_token_stream
from stagewise.llc import estimate_llc_module
from stagewise.models.regression import RegressionTransformer, count_parameters
from stagewise.plan import plan_profile
from stagewise.profiles import get_profile, settings
from stagewise.train import TrainedRun, train


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def _train_two_steps(model_fn, loss_fn, batch_fn, cfg, tmp_path):
    """Two optimizer steps of the pipeline's training loop with the profile's optimiser settings
    (three under the one-cycle schedule, which needs a warm-up step before its peak)."""
    steps = 3 if cfg.schedule == "onecycle" else 2
    cfg = dataclasses.replace(cfg, num_steps=steps, checkpoint_every=1, resume_every=1)
    run = train(model_fn, loss_fn, batch_fn, cfg, tmp_path / "run", progress=False)
    assert isinstance(run, TrainedRun) and list(run.checkpoint_steps) == list(range(steps + 1))
    assert all(math.isfinite(x) for x in run.train_loss)
    start, end = run.load_state(0), run.load_state(steps)
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], end[k])]
    assert moved, "no parameter moved in two optimizer steps"
    return run


def _sgld_ok(result, chains: int):
    assert math.isfinite(result.llc_mean)
    assert not any({"nan", "divergence"} & set(flags) for flags in result.diagnostics.values()), result.diagnostics
    assert result.loss_trace.shape[0] == chains and torch.isfinite(torch.as_tensor(result.loss_trace)).all()


def test_every_setting_has_a_paper_profile_with_the_papers_model_sizes():
    for setting in settings():
        assert get_profile(setting, "paper").name == "paper"
    from stagewise.models.language import make_language_model

    lm = get_profile("language", "paper")
    assert sum(p.numel() for p in make_language_model(lm.model).parameters()) == 3_355_016
    assert sum(p.numel() for p in make_language_model(lm.one_layer().model).parameters()) == 3_091_336
    assert count_parameters(RegressionTransformer(get_profile("regression", "paper").model)) == 51_717
    assert count_parameters(RegressionTransformer(get_profile("ridge", "paper").model)) == 2_641_417
    assert get_profile("rllc", "paper").language == "paper"
    plan_profile("paper")  # every notebook's paper work is derivable (probe presets, checkpoints, ...)


@pytest.mark.parametrize("layers", [2, 1])
def test_paper_language_model_trains_and_samples_at_the_papers_shape(layers, tmp_path):
    """Context 1024, the paper's AdamW settings; batch cut from 100 to 1 (training) and 2 (SGLD)."""
    from stagewise.models.language import lm_loss, make_language_model
    from stagewise.runs import language_sgld_model

    p = get_profile("language", "paper")
    p = p if layers == 2 else p.one_layer()
    assert p.model.n_ctx == 1024 and p.batch_size == 100 and p.train.optimizer == "adamw"
    tokens = torch.randint(0, p.model.d_vocab, (4, p.model.n_ctx), generator=torch.Generator().manual_seed(0))
    run = _train_two_steps(lambda: make_language_model(p.model), lm_loss, LMBatches(tokens, 1, 0), p.train, tmp_path)
    model_fn, loss = language_sgld_model(p)  # the sweeps' model and loss path
    model = model_fn()
    model.load_state_dict(run.load_state(2))
    cfg = dataclasses.replace(p.sgld, num_chains=1, num_draws=2, batch_size=2)
    _sgld_ok(estimate_llc_module(model.eval(), loss, (tokens,), cfg, progress=False), 1)


def test_paper_regression_models_train_and_sample(tmp_path):
    from stagewise.data.regression import RegressionBatches, regression_loss, regression_sgld_loss, sgld_dataset

    r = get_profile("regression", "paper")
    run = _train_two_steps(lambda: RegressionTransformer(r.model), regression_loss,
                           RegressionBatches(r.task, r.batch_size, 0), r.train, tmp_path / "regression")
    model = RegressionTransformer(r.model)
    model.load_state_dict(run.load_state(int(run.checkpoint_steps[-1])))
    data = sgld_dataset(r.task, 2 * r.sgld.batch_size)  # the paper's m = 1024; 2^20 samples cut
    cfg = dataclasses.replace(r.sgld, num_chains=2, num_draws=2, num_burnin=1)
    _sgld_ok(estimate_llc_module(model.eval(), regression_sgld_loss(r.sgld_loss), data, cfg, progress=False), 2)

    q = get_profile("ridge", "paper")  # 2.64M parameters, D = 8, K = 16; batch cut from 256 to 8
    from stagewise.transient_ridge import run_task

    task = run_task(q, q.m_grid[-1])
    run = _train_two_steps(lambda: RegressionTransformer(q.model), regression_loss, RegressionBatches(task, 8, 0),
                           q.train, tmp_path / "ridge")
    model = RegressionTransformer(q.model)
    model.load_state_dict(run.load_state(int(run.checkpoint_steps[-1])))
    cfg = dataclasses.replace(q.sgld, num_chains=1, num_draws=2, num_burnin=0, batch_size=8)
    _sgld_ok(estimate_llc_module(model.eval(), regression_sgld_loss(q.sgld_loss), sgld_dataset(task, 16), cfg,
                                 progress=False), 1)


def test_paper_refined_llc_of_one_head_and_data_refined_settings():
    """Notebook 04 at paper: one head's wrLLC on the paper LM (batch cut from 100 to 2); the head's
    weights move, every other weight stays bit-identical."""
    from stagewise.refined import head_param_mask
    from stagewise.runs import language_sgld_model

    c = get_profile("rllc", "paper")
    lm = get_profile("language", c.language)
    model_fn, loss = language_sgld_model(lm)
    torch.manual_seed(0)
    model = model_fn().eval()
    names, mask = head_param_mask(model, 1, 6)
    tokens = torch.randint(0, lm.model.d_vocab, (4, lm.model.n_ctx), generator=torch.Generator().manual_seed(1))
    cfg = dataclasses.replace(c.sgld, num_chains=1, num_draws=2, batch_size=2)
    res = estimate_llc_module(model, loss, (tokens,), cfg, params_to_sample=names, param_mask=mask, progress=False)
    _sgld_ok(res, 1)
    assert res.num_sampled == 7 * 0 + sum(int(m.sum()) for m in mask.values())
    assert dataclasses.replace(c.sgld, nbeta=c.data_refined_nbeta).nbeta == 30.0


def test_paper_hessian_and_toy_potentials_run():
    from stagewise.data.regression import regression_loss, sample_batch
    from stagewise.hessian import hutchinson_trace, top_eigenvalues
    from stagewise.llc.module import module_loss_fn
    from stagewise.llc import SGLDConfig, estimate_llc
    from stagewise.potentials import POTENTIALS
    from stagewise.profiles.hessian import TOY_SGLD

    h, r = get_profile("hessian", "paper"), get_profile("regression", "paper")
    assert h.hessian_batch == 1024 and h.num_probes == 100
    b = sample_batch(r.task, 128, torch.Generator().manual_seed(0))  # m cut from 1024: HVPs cost seconds here
    loss_fn, params = module_loss_fn(RegressionTransformer(r.model).eval(), regression_loss)
    trace = hutchinson_trace(loss_fn, params, (b.tokens, b.ys), num_probes=2, chunk_size=2, seed=0)  # paper: 100
    assert math.isfinite(trace.mean)
    eig = top_eigenvalues(loss_fn, params, (b.tokens, b.ys), k=1, tol=h.lanczos_tol, max_iter=4, seed=0)
    assert math.isfinite(eig.top)
    nbeta, eps = TOY_SGLD["quartic"]
    cfg = SGLDConfig(epsilon=eps, gamma=1.0, nbeta=nbeta, num_chains=2, num_draws=20, num_burnin=4, seed=0)
    _sgld_ok(estimate_llc(POTENTIALS["quartic"].fn, POTENTIALS["quartic"].params(), cfg, progress=False), 2)


# ---------------------------------------------------------------------------------------- corpus


def test_paper_corpus_has_the_papers_token_budget_and_the_offline_corpus_is_refused_at_once(tmp_cache, monkeypatch):
    p = get_profile("language", "paper")
    budget = p.train.num_steps * p.batch_size * p.model.n_ctx
    assert budget == 5_120_000_000 and p.corpus.min_train_tokens == budget
    offline = CorpusConfig(min_train_tokens=budget)  # what paper gets without $STAGEWISE_PAPER_CORPUS
    with pytest.raises(CorpusBudgetError) as info:
        load_token_stream(offline, "train")
    msg = str(info.value)
    assert PAPER_CORPUS_ENV in msg and "shards" in msg and "hub" in msg and "5,120,000,000" in msg
    assert not any(tmp_cache.rglob("*.pt")), "the refusal came after building something"
    # cpu and smoke keep the offline corpora and no budget
    for name in ("cpu", "smoke"):
        c = get_profile("language", name).corpus
        assert c.source in ("registry", "sample") and c.min_train_tokens == 0
    # a budget the offline corpus can meet is accepted before the build
    CorpusConfig(min_train_tokens=OFFLINE_TRAIN_TOKENS_MAX // 2)


def test_paper_corpus_is_chosen_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(PAPER_CORPUS_ENV, raising=False)
    assert paper_corpus(10).source == "registry"
    monkeypatch.setenv(PAPER_CORPUS_ENV, "hub")
    c = paper_corpus(10)
    assert (c.source, c.hub_name, c.min_train_tokens) == ("hub", "stanford-crfm/DSIR-filtered-pile-50M", 10)
    monkeypatch.setenv(PAPER_CORPUS_ENV, str(tmp_path / "pile" / "*.jsonl"))
    c = paper_corpus(10)
    assert c.source == "shards" and c.shards.endswith("*.jsonl")


def _write_shards(directory, n_files=3, rows=60):
    directory.mkdir(parents=True)
    for f in range(n_files):
        lines = [json.dumps({"contents": f"Shard {f} line {i}: " + "the quick brown fox jumps over it " * 12,
                             "metadata": {"pile_set_name": ["Pile-CC"]}}) for i in range(rows)]
        (directory / f"part-{f:02d}.jsonl").write_text("\n".join(lines) + "\n")


def test_local_shards_build_a_corpus_and_the_budget_is_checked_on_the_tokens(tmp_cache, tmp_path):
    _write_shards(tmp_path / "pile")
    files, builder = shard_files(str(tmp_path / "pile"))
    assert builder == "json" and [f.rsplit("/", 1)[1] for f in files] == ["part-00.jsonl", "part-01.jsonl", "part-02.jsonl"]
    assert shard_files(str(tmp_path / "pile" / "*.jsonl"))[0] == files
    cfg = CorpusConfig(source="shards", shards=str(tmp_path / "pile"), validation_fraction=0.1, sgld_fraction=0.1)
    ds = load_corpus(cfg)
    assert sum(len(ds[s]) for s in ds) == 180 and set(ds["train"]["source"]) == {"Pile-CC"}
    stream = load_token_stream(cfg, "train", progress=False)
    enough = dataclasses.replace(cfg, min_train_tokens=stream.numel())
    assert load_token_stream(enough, "train", progress=False).numel() == stream.numel()
    too_much = dataclasses.replace(cfg, min_train_tokens=stream.numel() + 1)
    with pytest.raises(CorpusBudgetError, match="fewer than"):
        load_token_stream(too_much, "train", progress=False)


def test_bad_shard_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="shards"):
        CorpusConfig(source="shards")
    with pytest.raises(ValueError, match="matches no data file"):
        build_corpus(CorpusConfig(source="shards", shards=str(tmp_path / "nothing*.jsonl")))
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="mixes file formats"):
        shard_files(str(tmp_path / "*"))
    with pytest.raises(ValueError, match="min_train_tokens"):
        CorpusConfig(min_train_tokens=-1)
    with pytest.raises(ValueError, match="only applies"):
        CorpusConfig(source="hub", shards="x.jsonl")


def test_new_corpus_fields_leave_existing_cache_keys_unchanged():
    from stagewise.cache import config_to_dict

    d = config_to_dict(CorpusConfig())
    assert "shards" not in d and "min_train_tokens" not in d
    assert config_to_dict(CorpusConfig(min_train_tokens=5))["min_train_tokens"] == 5


def _load_gpu_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return gpu_check


def test_gpu_check_sections_record_a_failing_part_and_skip_parts_past_the_budget():
    """One lease, one run: a part that raises is recorded with its error and the next part still
    runs; a part not started within the budget is skipped and recorded; the record is saved after
    every part (so a run killed by its lease keeps what finished)."""
    gpu_check = _load_gpu_check()
    saves = []
    sec = gpu_check.Sections(budget_s=3600, save=lambda: saves.append(len(sec.log)))

    def broken():
        raise RuntimeError("no transformer_lens here")

    assert sec.run("broken", broken) is None
    assert sec.run("fine", lambda: 7) == 7
    sec.budget_s = 0.0  # the budget is spent from here on
    ran = []
    assert sec.run("late", lambda: ran.append(1)) is None
    assert ran == []
    status = {e["section"]: e["status"] for e in sec.log}
    assert status["broken"].startswith("error: RuntimeError: no transformer_lens here")
    assert "RuntimeError" in sec.log[0]["traceback"]
    assert status["fine"] == "ok" and status["late"].startswith("skipped")
    assert saves == [1, 2, 3]
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--tiny", "--budget-s", "0"])


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu_with_tiny_shapes(tmp_path):
    """benchmarks/gpu_check.py end to end without a GPU (--device cpu --tiny): every table filled,
    results appended and written, devinterp compared or skipped with the reason."""
    gpu_check = _load_gpu_check()
    record = gpu_check.main(["--device", "cpu", "--tiny", "--results", str(tmp_path)])
    assert [r["what"].split(",")[0] for r in record["training"]] == ["LM training", "LM training", "regression training"]
    assert all(r["steps_per_s"] > 0 for r in record["training"])
    assert {r["model"] for r in record["sgld"]} == {"lm", "regression"}
    assert all(r["chain_steps_per_s"] > 0 and math.isfinite(r["llc_mean"]) for r in record["sgld"])
    devinterp = any(r["contestant"].startswith("devinterp") for r in record["sgld"])
    assert devinterp or any("devinterp comparison skipped" in n for n in record["notes"])
    assert record["projection"]["profile"] == "smoke" and len(record["projection"]["notebooks"]) == 5
    assert all(math.isfinite(v) and v > 0 for v in record["projection"]["total_seconds"].values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert "TINY shapes" in md and "| total |" in md
    saved = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    assert saved["tiny"] is True and all(e["status"] == "ok" for e in saved["sections"])
    assert saved["environment"]["torch"] == torch.__version__
