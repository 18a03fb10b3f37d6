import json
from functools import partial

import numpy as np
import pytest
import torch

from stagewise.cache import CorruptArtifactError, artifact_dir
from stagewise.data.regression import RegressionBatches, RegressionTask, regression_loss, sample_batch
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig
from stagewise.train import TrainConfig, TrainedRun, checkpoint_schedule, train

SMALL = RegressionTransformerConfig(task_size=2, max_examples=4, n_layers=1, n_heads=2, d_embed=16, d_mlp=16)
TASK = RegressionTask(task_size=2, max_examples=4)


def _train(run_dir, cfg, batch_fn=None):
    return train(partial(RegressionTransformer, SMALL), regression_loss, batch_fn or RegressionBatches(TASK, 32, 0),
                 cfg, run_dir, progress=False)


def test_paper_schedule_has_190_checkpoints_from_0_to_500k():
    steps = checkpoint_schedule(500_000, 100, 90)
    assert len(steps) == 190
    assert steps[0] == 0 and steps[-1] == 500_000
    assert np.all(np.diff(steps) > 0)
    # log-spaced part is dense early: at least 40 checkpoints before the first linear one (5,051)
    assert (steps < 5_000).sum() >= 40


def test_short_runs_checkpoint_every_step():
    assert np.array_equal(checkpoint_schedule(10, 100, 90), np.arange(11))


def test_training_reduces_loss_and_writes_checkpoints(tmp_path):
    cfg = TrainConfig(num_steps=300, lr=3e-3, num_linear=5, num_log=5, resume_every=50)
    run = _train(tmp_path / "run", cfg)
    assert run.train_loss.shape == (300,)
    # On held-out sequences the trained model beats the best context-free predictor (always 0,
    # loss D + σ² = 2.125), i.e. it has started to use the context.
    b = sample_batch(TASK, 4096, torch.Generator().manual_seed(9))
    final = regression_loss(run.load_model(300), (b.tokens, b.ys)).item()
    assert final < 0.95 * (TASK.task_size + TASK.noise_variance)
    assert final < regression_loss(run.load_model(0), (b.tokens, b.ys)).item() - 0.3
    assert np.array_equal(run.checkpoint_steps, cfg.checkpoint_steps())
    first, last = run.load_state(0), run.load_state(300)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], last["blocks.0.attn.qkv.weight"])
    model = run.load_model(300)
    assert isinstance(model, RegressionTransformer) and not model.training


class _Killed(RuntimeError):
    pass


def _train_killed_at(run_dir, cfg, step):
    """Train until the batch of ``step`` is asked for, then die as a killed process would."""
    data = RegressionBatches(TASK, 32, 0)

    def dying(s):
        if s == step:
            raise _Killed("simulated kill")
        return data(s)

    with pytest.raises(_Killed):
        _train(run_dir, cfg, dying)


def test_killed_run_resumes_bit_identical(tmp_path):
    cfg = TrainConfig(num_steps=120, lr=3e-3, num_linear=7, num_log=5, resume_every=1)
    reference = _train(tmp_path / "ref", cfg)

    _train_killed_at(tmp_path / "resumed", cfg, 77)
    assert (tmp_path / "resumed" / "resume.pt").exists()
    assert not (tmp_path / "resumed" / "done.json").exists()
    first_piece = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=False)["seconds"]
    assert first_piece > 0
    resumed = _train(tmp_path / "resumed", cfg)
    done = json.loads((tmp_path / "resumed" / "done.json").read_text())
    assert done["resumed_from"] > 0
    # the training time adds the pieces: the first up to its last resume point, then the second
    assert done["seconds"] == pytest.approx(first_piece + done["seconds_last_piece"])
    assert resumed.seconds == done["seconds"] > done["seconds_last_piece"]
    for step in reference.checkpoint_steps:
        a, b = reference.load_state(step), resumed.load_state(step)
        assert all(torch.equal(a[k], b[k]) for k in a), f"checkpoint {step} differs after resume"
    assert np.array_equal(reference.train_loss, resumed.train_loss)


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    cfg = TrainConfig(num_steps=20, num_linear=2, num_log=2)
    a = _train(tmp_path / "a", cfg)
    b = _train(tmp_path / "b", cfg)
    c = _train(tmp_path / "c", TrainConfig(num_steps=20, num_linear=2, num_log=2, seed=1))
    assert np.array_equal(a.train_loss, b.train_loss)
    assert not np.array_equal(a.train_loss, c.train_loss)


def test_completed_run_is_loaded_not_retrained(tmp_path):
    cfg = TrainConfig(num_steps=10, num_linear=2, num_log=2)
    _train(tmp_path / "r", cfg)

    def must_not_be_called(step):
        raise AssertionError("a cached run was retrained")

    run = _train(tmp_path / "r", cfg, must_not_be_called)
    assert len(run.train_loss) == 10


def test_corrupt_checkpoint_raises_naming_the_file(tmp_path):
    cfg = TrainConfig(num_steps=10, num_linear=2, num_log=2)
    run = _train(tmp_path / "r", cfg)
    path = run.checkpoint_path(10)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptArtifactError, match="step_00000010.pt"):
        run.load_state(10)


def test_corrupt_resume_state_is_not_silently_restarted(tmp_path):
    cfg = TrainConfig(num_steps=10, num_linear=2, num_log=2)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "resume.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptArtifactError, match="resume.pt"):
        _train(tmp_path / "r", cfg)


def test_diverging_training_stops_with_the_step(tmp_path):
    def nan_data(step):
        tok, ys = RegressionBatches(TASK, 8, 0)(step)
        return tok, ys * float("nan") if step == 3 else ys

    with pytest.raises(FloatingPointError, match="step 3"):
        _train(tmp_path / "r", TrainConfig(num_steps=10, num_linear=2, num_log=2), nan_data)


@pytest.mark.parametrize("kwargs,name", [({"num_steps": 0}, "num_steps"), ({"lr": -1.0}, "lr"),
                                         ({"optimizer": "sgd"}, "optimizer"), ({"pct_start": 1.5}, "pct_start"),
                                         ({"schedule": "cosine"}, "schedule"), ({"div_factor": 0.5}, "div_factor"),
                                         ({"final_div_factor": 0}, "final_div_factor"),
                                         ({"div_factor": "25"}, "div_factor")])
def test_bad_training_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_not_a_checkpoint_step_is_an_error(tmp_path):
    run = _train(tmp_path / "r", TrainConfig(num_steps=10, num_linear=2, num_log=2))
    with pytest.raises(ValueError, match="not a checkpoint"):
        run.load_state(7 if 7 not in run.checkpoint_steps else 100)


def test_onecycle_keeps_betas_and_peaks_at_max_lr(tmp_path):
    from stagewise.train import _make_optimizer

    cfg = TrainConfig(num_steps=100, lr=0.003)
    opt, sched = _make_optimizer(torch.nn.Linear(2, 2), cfg)
    lrs, betas = [], []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0]["betas"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.003)
    assert int(np.argmax(lrs)) in (49, 50)
    assert set(betas) == {(0.9, 0.999)}


def test_onecycle_start_and_end_follow_the_divisors():
    # the authors' regression code: div_factor = final_div_factor = num_steps / 2 - 1
    from stagewise.train import _make_optimizer

    def lrs(cfg):
        opt, sched = _make_optimizer(torch.nn.Linear(2, 2), cfg)
        out = []
        for _ in range(cfg.num_steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return np.array(out)

    default = lrs(TrainConfig(num_steps=100, lr=0.003))
    assert default[0] == pytest.approx(0.003 / 25) and default[-1] == pytest.approx(0.003 / 25 / 1e4)
    authors = lrs(TrainConfig(num_steps=100, lr=0.003, div_factor=49, final_div_factor=49))
    assert authors[0] == pytest.approx(0.003 / 49) and authors[-1] == pytest.approx(0.003 / 49 / 49)
    assert authors.max() == pytest.approx(0.003) and int(np.argmax(authors)) in (49, 50)
    assert np.all(authors[:49] < default[:49])  # a lower start, the same peak


def test_analysis_steps_spread_in_log_time_and_keep_the_ends():
    from stagewise.train import analysis_steps

    steps = checkpoint_schedule(10_000, 100, 90)
    sub = analysis_steps(steps, 30)
    assert len(sub) == 30 and len(set(sub.tolist())) == 30
    assert sub[0] == 0 and sub[-1] == 10_000 and set(sub) <= set(steps)
    gaps = np.diff(np.log1p(sub[1:]))
    assert gaps.max() < 3 * np.median(gaps)  # roughly even in log time
    assert np.array_equal(analysis_steps(steps[:5], 30), steps[:5])
    with pytest.raises(ValueError, match="num"):
        analysis_steps(steps, 1)


def test_cache_keys_of_existing_configs_are_unchanged():
    # Digests computed before compute_dtype existed: runs cached under them (e.g. the 100k-step
    # regression pilot) must still be found. A new field needs metadata=HASH_OMIT_DEFAULT.
    from stagewise.cache import config_hash

    assert config_hash(TrainConfig()) == "cdd57da1b4e0c062"
    assert config_hash(TrainConfig(num_steps=100_000, resume_every=5_000)) == "0db074f51420ef91"
    assert config_hash(TrainConfig(div_factor=25.0, final_div_factor=1e4)) == "cdd57da1b4e0c062"
    assert config_hash(TrainConfig(div_factor=249_999, final_div_factor=249_999)) != "cdd57da1b4e0c062"
    assert config_hash(TrainConfig(compute_dtype="bfloat16")) != config_hash(TrainConfig())


def test_bfloat16_compute_runs_the_forward_in_bf16_and_keeps_float32_state(tmp_path):
    seen = []

    def loss_fn(model, batch):
        tokens, ys = batch
        out = model(tokens)
        seen.append(out.dtype)
        return ((out[:, ::2, 0] - ys) ** 2).mean()

    cfg = TrainConfig(num_steps=40, lr=3e-3, num_linear=2, num_log=2, resume_every=40, compute_dtype="bfloat16")
    run = train(partial(RegressionTransformer, SMALL), loss_fn, RegressionBatches(TASK, 32, 0), cfg,
                tmp_path / "bf16", progress=False)
    assert set(seen) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in run.load_state(40).values() if v.is_floating_point())
    opt_state = torch.load(tmp_path / "bf16" / "resume.pt", weights_only=False)["optimizer"]["state"]
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt_state.values())
    # the same run in float32 (same init, same batches): bf16 rounding (8-bit mantissa, relative
    # error ~0.4%) moves every loss a little but leaves the trajectory where fp32 puts it
    ref = _train(tmp_path / "fp32", TrainConfig(num_steps=40, lr=3e-3, num_linear=2, num_log=2, resume_every=40))
    diff = np.abs(run.train_loss - ref.train_loss)
    assert 0 < diff.max() < 0.02 * ref.train_loss.min()


def test_bad_compute_dtype_raises():
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="float16")


def test_fused_optimizer_takes_the_same_steps_up_to_rounding(tmp_path):
    from stagewise.cache import config_hash

    base = dict(num_steps=30, lr=3e-3, optimizer="adamw", weight_decay=0.05, num_linear=2, num_log=2, resume_every=30)
    fused = _train(tmp_path / "fused", TrainConfig(**base, fused_optimizer=True))
    plain = _train(tmp_path / "plain", TrainConfig(**base))
    a, b = fused.load_state(30), plain.load_state(30)
    start = plain.load_state(0)
    for k in a:
        moved = (b[k] - start[k]).abs().max()
        assert (a[k] - b[k]).abs().max() <= 1e-3 * max(float(moved), 1e-6) + 1e-6, k
    assert config_hash(TrainConfig(fused_optimizer=True)) != config_hash(TrainConfig())


# --- CUDA-graph training path: its bookkeeping, run eagerly on the CPU (capture=False) ---------------

def test_cuda_graph_on_the_cpu_is_a_clear_error(tmp_path):
    cfg = TrainConfig(num_steps=5, num_linear=2, num_log=2)
    with pytest.raises(ValueError, match="cuda_graph"):
        train(partial(RegressionTransformer, SMALL), regression_loss, RegressionBatches(TASK, 8, 0), cfg,
              tmp_path / "run", progress=False, cuda_graph=True)


def test_graphed_step_warmup_is_undone_and_steps_match_the_eager_loop():
    from stagewise.train import _GraphedStep, _make_optimizer

    cfg = TrainConfig(num_steps=40, lr=3e-3)
    data = RegressionBatches(TASK, 16, 3)

    def fresh():
        torch.manual_seed(0)
        model = RegressionTransformer(SMALL)
        return model, *_make_optimizer(model, cfg)

    model, opt, sched = fresh()
    eager = []
    for step in range(6):
        loss = regression_loss(model, data(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        eager.append(loss.item())

    g_model, g_opt, g_sched = fresh()
    # the warm-up takes 3 real steps on step 0's batch; the weights and Adam's state must be put back
    graphed = _GraphedStep(g_model, g_opt, regression_loss, data(0), cfg, warmup=3, capture=False)
    assert all(float(s["step"]) == 0 for s in g_opt.state.values())
    assert all(torch.count_nonzero(s["exp_avg"]) == 0 for s in g_opt.state.values())
    replayed = []
    for step in range(6):
        replayed.append(graphed(data(step)).item())
        g_sched.step()
    assert replayed == eager
    for a, b in zip(model.parameters(), g_model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="one shape"):
        graphed(RegressionBatches(TASK, 8, 3)(0))


def test_prefetcher_yields_every_step_in_order():
    from stagewise.train import _Prefetcher

    data = RegressionBatches(TASK, 4, 1)
    pre = _Prefetcher(data, 5, 30, pin=False, depth=7, workers=3)
    got = [next(pre) for _ in range(25)]
    with pytest.raises(StopIteration):
        next(pre)
    pre.close()
    for step, (tokens, ys) in zip(range(5, 30), got):
        want = data(step)
        assert torch.equal(tokens, want[0]) and torch.equal(ys, want[1])


def test_deferred_finiteness_check_names_the_first_bad_step(tmp_path):
    from stagewise.train import _check_finite

    losses = torch.ones(50)
    _check_finite(losses, 0, 50, tmp_path)
    losses[17], losses[30] = float("nan"), float("inf")
    _check_finite(losses, 0, 17, tmp_path)
    with pytest.raises(FloatingPointError, match="at step 17 "):
        _check_finite(losses, 10, 40, tmp_path)
    with pytest.raises(FloatingPointError, match="at step 30 "):
        _check_finite(losses, 18, 40, tmp_path)


def test_capturable_optimizer_state_is_saved_portable():
    from stagewise.train import _make_capturable, _portable_optimizer_state

    torch.manual_seed(0)
    model = RegressionTransformer(SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    regression_loss(model, RegressionBatches(TASK, 8, 0)(0)).backward()
    opt.step()
    state = opt.state_dict()
    # what a capturable optimizer's state dict holds: a tensor lr and capturable on
    state["param_groups"][0]["lr"] = torch.tensor(1e-3)
    state["param_groups"][0]["capturable"] = True
    portable = _portable_optimizer_state(state)
    group = portable["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-3) and isinstance(group["lr"], float) and group["capturable"] is False
    eager = torch.optim.Adam(model.parameters(), lr=3e-3)
    eager.load_state_dict(portable)  # loads into the eager optimizer, which then steps
    regression_loss(model, RegressionBatches(TASK, 8, 0)(1)).backward()
    eager.step()
    assert float(eager.state[next(model.parameters())]["step"]) == 2
    _make_capturable(eager)
    assert isinstance(eager.param_groups[0]["lr"], torch.Tensor) and eager.param_groups[0]["capturable"] is True
    assert float(eager.param_groups[0]["lr"]) == pytest.approx(1e-3)


def test_capturable_schedule_fills_the_same_lr_tensor_in_place():
    """A captured graph reads the lr through its storage: the schedule must move it there."""
    from stagewise.train import _make_optimizer

    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(num_steps=1000)
    opt, sched = _make_optimizer(model, cfg, capturable=True)
    ref_opt, ref_sched = _make_optimizer(torch.nn.Linear(3, 2), cfg)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and opt.param_groups[0]["capturable"] is True
    ptr = lr.data_ptr()
    for _ in range(600):
        sched.step()
        ref_sched.step()
    now = opt.param_groups[0]["lr"]
    assert now is lr and now.data_ptr() == ptr
    assert float(now) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6)
    assert float(now) > 10 * cfg.lr / 25  # moved well past the one-cycle start (max_lr / 25)


def test_resume_point_without_a_clock_gives_unknown_training_time(tmp_path):
    """A resume.pt written before the clock was kept across pieces: the whole run's time is unknown
    (null, NaN on the run), not the last piece's alone."""
    cfg = TrainConfig(num_steps=120, lr=3e-3, num_linear=7, num_log=5, resume_every=1)
    _train_killed_at(tmp_path / "r", cfg, 77)
    state = torch.load(tmp_path / "r" / "resume.pt", weights_only=False)
    del state["seconds"]
    torch.save(state, tmp_path / "r" / "resume.pt")
    run = _train(tmp_path / "r", cfg)
    done = json.loads((tmp_path / "r" / "done.json").read_text())
    assert done["seconds"] is None and done["seconds_last_piece"] > 0
    assert np.isnan(run.seconds)
