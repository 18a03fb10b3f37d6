import dataclasses

import pytest

from stagewise.data.regression import RegressionTask
from stagewise.profiles import PROFILE_NAMES, check_profile, default_profile, get_profile, settings


def test_every_setting_defines_every_profile():
    import importlib

    assert "regression" in settings()
    for setting in settings():
        module = importlib.import_module(f"stagewise.profiles.{setting}")
        assert set(module.PROFILES) == set(PROFILE_NAMES), setting
        for preset in module.PROFILES.values():
            assert dataclasses.is_dataclass(preset)
            with pytest.raises(dataclasses.FrozenInstanceError):
                preset.name = "x"


def test_paper_regression_profile_has_the_papers_hyperparameters():
    p = get_profile("regression", "paper")
    assert (p.task.task_size, p.task.max_examples, p.task.noise_variance) == (4, 8, 0.125)
    assert (p.model.n_layers, p.model.n_heads, p.model.d_embed, p.model.d_mlp) == (2, 4, 64, 64)
    t = p.train
    assert (t.num_steps, t.lr, t.optimizer, t.weight_decay, t.betas) == (500_000, 0.003, "adam", 0.0, (0.9, 0.999))
    assert (t.schedule, t.pct_start) == ("onecycle", 0.5)
    assert p.batch_size == 256 and p.seeds == (0, 1, 2, 3, 4)
    assert len(t.checkpoint_steps()) == 190


def test_overrides_apply_and_unknown_fields_are_rejected():
    assert get_profile("regression", "cpu", seeds=(7,), llc_seeds=(7,)).seeds == (7,)
    with pytest.raises(ValueError, match="llc_seeds"):
        get_profile("regression", "cpu", seeds=(7,))
    with pytest.raises(ValueError, match="unknown override"):
        get_profile("regression", "cpu", sedes=(7,))


def test_bad_profile_and_setting_names_list_the_allowed_values():
    with pytest.raises(ValueError, match="smoke, cpu, long, paper"):
        get_profile("regression", "fast")
    with pytest.raises(ValueError, match="setting must be one of"):
        get_profile("vision", "cpu")
    with pytest.raises(ValueError, match="profile must be one of"):
        check_profile("")


def test_default_profile_reads_the_environment(monkeypatch):
    monkeypatch.setenv("STAGEWISE_PROFILE", "paper")
    assert default_profile() == "paper"
    monkeypatch.delenv("STAGEWISE_PROFILE")
    assert default_profile() == "cpu"
    monkeypatch.setenv("STAGEWISE_PROFILE", "gpu")
    with pytest.raises(ValueError, match="gpu"):
        default_profile()


def test_task_and_model_dimensions_must_agree():
    with pytest.raises(ValueError, match="must agree on D and K"):
        get_profile("regression", "cpu", task=RegressionTask(task_size=3))


def test_llc_profile_of_other_seeds_changes_only_the_llc_settings():
    from stagewise.llc import SGLDConfig

    sgld = SGLDConfig.from_tilde(3e-4, 0.01, 0.01, num_chains=1, num_draws=50, num_burnin=10, batch_size=64)
    p = get_profile("regression", "smoke", seeds=(0, 1, 2), llc_seeds=(0, 2), other_seeds_llc_checkpoints=5,
                    other_seeds_sgld=sgld)
    assert p.llc_profile(0) is p
    other = p.llc_profile(2)
    assert (other.num_analysis_checkpoints, other.sgld) == (5, sgld)
    assert (other.task, other.model, other.train, other.batch_size, other.seeds) == (p.task, p.model, p.train,
                                                                                      p.batch_size, p.seeds)
    same = get_profile("regression", "smoke", seeds=(0, 1), llc_seeds=(0, 1), other_seeds_llc_checkpoints=None,
                       other_seeds_sgld=None).llc_profile(1)
    assert (same.num_analysis_checkpoints, same.sgld) == (p.num_analysis_checkpoints, p.sgld)
    with pytest.raises(ValueError, match="llc_seeds"):
        p.llc_profile(1)
    with pytest.raises(ValueError, match="other_seeds_llc_checkpoints"):
        get_profile("regression", "smoke", other_seeds_llc_checkpoints=1)


def test_language_seeds_and_one_layer_profiles():
    """Other seeds change both the initialisation and the batch order, and nothing else; the main
    seed's profile is the profile itself (its cached run is the main run); the one-layer profile
    uses the paper's one-layer SGLD settings."""
    import dataclasses

    cfg = get_profile("language", "paper")
    s3 = cfg.with_seed(3)
    assert (s3.train.seed, s3.data_seed, s3.seeds) == (3, 3, (3,))
    assert dataclasses.replace(s3, train=cfg.train, data_seed=cfg.data_seed, seeds=cfg.seeds) == cfg
    cpu = get_profile("language", "cpu")
    assert cpu.with_seed(cpu.seeds[0]) == cpu
    one = cfg.one_layer()
    assert one.model.n_layers == 1 and (one.sgld.epsilon, one.sgld.gamma) == (3e-3, 300.0)
    with pytest.raises(ValueError, match="seeds must start"):
        get_profile("language", "cpu", seeds=(2, 1))
    with pytest.raises(ValueError, match="sgld_stride"):
        get_profile("language", "cpu", sgld_stride=0)


def test_llc_fast_path_settings_are_validated_and_paper_stays_exact():
    with pytest.raises(ValueError, match="sgld_loss must be one of full, predictions_only"):
        get_profile("regression", "cpu", sgld_loss="fast")
    with pytest.raises(ValueError, match="sgld_dtype must be one of auto, float32, bfloat16"):
        get_profile("regression", "cpu", sgld_dtype="half")
    with pytest.raises(ValueError, match="sgld_model must be one of fast, transformer_lens"):
        get_profile("language", "cpu", sgld_model="hooked")
    with pytest.raises(ValueError, match="train_model must be one of fast, transformer_lens"):
        get_profile("language", "cpu", train_model="hooked")
    with pytest.raises(ValueError, match="sgld_dtype"):
        get_profile("ridge", "cpu", sgld_dtype="half")
    assert get_profile("regression", "paper").sgld_dtype == "float32"
    assert get_profile("language", "paper").sgld_dtype == "float32"
    assert get_profile("regression", "cpu").sgld_loss == "predictions_only"
    assert get_profile("language", "cpu").sgld_model == "fast"
