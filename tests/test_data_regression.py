import pytest
import torch

from stagewise.data.regression import (RegressionBatches, RegressionTask, regression_loss, sample_batch, task_set,
                                       tokenize)
from stagewise.models.regression import RegressionTransformer, RegressionTransformerConfig


def test_token_layout_matches_app_d22():
    xs = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2) + 1
    ys = -torch.arange(6, dtype=torch.float32).reshape(2, 3) - 1
    tok = tokenize(xs, ys)
    assert tok.shape == (2, 6, 3)
    assert torch.equal(tok[:, 0::2, 0], torch.zeros(2, 3))  # x tokens: (0, x_k)
    assert torch.equal(tok[:, 0::2, 1:], xs)
    assert torch.equal(tok[:, 1::2, 0], ys)  # y tokens: (y_k, 0, ..., 0)
    assert torch.equal(tok[:, 1::2, 1:], torch.zeros(2, 3, 2))


def test_samples_follow_the_linear_model_with_the_stated_noise():
    task = RegressionTask(task_size=4, max_examples=8, noise_variance=0.125)
    b = sample_batch(task, 20_000, torch.Generator().manual_seed(0))
    resid = b.ys - torch.einsum("bkd,bd->bk", b.xs, b.tasks)
    assert abs(resid.var().item() - 0.125) < 0.005
    assert abs(b.tasks.var().item() - 1.0) < 0.03
    assert abs(b.xs.var().item() - 1.0) < 0.01


def test_gains_scale_inputs_and_tasks():
    task = RegressionTask()
    b = sample_batch(task, 20_000, torch.Generator().manual_seed(1), input_gain=4.0, task_gain=9.0)
    assert abs(b.xs.var().item() - 4.0) < 0.1
    assert abs(b.tasks.var().item() - 9.0) < 0.3


def test_finite_task_sets_are_nested_and_sampled_from():
    small = task_set(RegressionTask(num_tasks=3, task_seed=7))
    big = task_set(RegressionTask(num_tasks=2000, task_seed=7))
    assert torch.equal(small, big[:3])
    b = sample_batch(RegressionTask(num_tasks=3, task_seed=7), 500, torch.Generator().manual_seed(0))
    dist = torch.cdist(b.tasks, small).min(dim=1).values
    assert torch.all(dist < 1e-6)
    assert len(torch.unique(b.tasks, dim=0)) == 3


def test_batches_are_a_deterministic_function_of_step():
    f, g = RegressionBatches(RegressionTask(), 16, seed=3), RegressionBatches(RegressionTask(), 16, seed=3)
    assert torch.equal(f(10)[0], g(10)[0])
    assert not torch.equal(f(10)[0], f(11)[0])
    assert not torch.equal(f(10)[0], RegressionBatches(RegressionTask(), 16, seed=4)(10)[0])


@pytest.mark.parametrize("kwargs,name", [({"task_size": 0}, "task_size"), ({"max_examples": 0}, "max_examples"),
                                         ({"noise_variance": -1.0}, "noise_variance"), ({"num_tasks": 0}, "num_tasks")])
def test_bad_task_parameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RegressionTask(**kwargs)


def test_task_dimension_mismatch_between_data_and_model_is_an_error():
    model = RegressionTransformer(RegressionTransformerConfig(task_size=4))
    b = sample_batch(RegressionTask(task_size=3), 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="task_size D = 4"):
        regression_loss(model, (b.tokens, b.ys))


def test_zero_predictor_loss_is_d_plus_sigma2():
    # E[y²] = E[(tᵀx)²] + σ² = D + σ²: the reference level of the untrained model's plateau.
    task = RegressionTask(task_size=4, noise_variance=0.125)
    b = sample_batch(task, 50_000, torch.Generator().manual_seed(0))
    assert abs((b.ys**2).mean().item() - 4.125) < 0.06


def test_predictions_only_training_loss_is_the_papers_loss_and_gradient():
    """train_loss="predictions_only" trains on the same function as the papers' full forward: equal
    loss and gradient (to float rounding) at weights away from the initialisation."""
    from stagewise.data.regression import regression_train_loss

    torch.manual_seed(0)
    model = RegressionTransformer(RegressionTransformerConfig())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = sample_batch(RegressionTask(), 64, torch.Generator().manual_seed(1))
    assert regression_train_loss("full") is regression_loss
    losses, grads = [], []
    for path in ("full", "predictions_only"):
        model.zero_grad()
        loss = regression_train_loss(path)(model, (b.tokens, b.ys))
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().max() > 1e-3  # the comparison is not between two zero vectors


def test_unknown_training_loss_path_names_the_parameter():
    from stagewise.data.regression import regression_train_loss
    from stagewise.profiles.regression import RegressionProfile

    with pytest.raises(ValueError, match="train_loss must be one of full, predictions_only"):
        regression_train_loss("fast")
    with pytest.raises(ValueError, match="train_loss must be one of"):
        RegressionProfile(name="x", train_loss="fast")


def test_training_loss_path_is_in_the_run_key_only_when_not_the_papers():
    """Runs cached before the field existed keep their key ("full" is omitted from the hash); a
    predictions-only run is another run."""
    import dataclasses

    from stagewise.cache import config_hash, config_to_dict
    from stagewise.profiles.regression import PROFILES
    from stagewise.runs import _regression_key

    full = dataclasses.replace(PROFILES["smoke"], train_loss="full")
    pred = dataclasses.replace(PROFILES["smoke"], train_loss="predictions_only")
    assert "train_loss" not in config_to_dict(_regression_key(full, 0))
    assert config_to_dict(_regression_key(pred, 0))["train_loss"] == "predictions_only"
    assert config_hash(_regression_key(pred, 0)) != config_hash(_regression_key(full, 0))
