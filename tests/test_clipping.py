"""Clip modes, asserted on the real training step: the Trainer, the module and the monitor of a real
run, plus a spy that sees what the optimizer actually did to the weights."""

import pytest
import torch
from lightning.pytorch import Callback

from srn_lightning.clipping import clip_gradients_, trainer_kwargs
from srn_lightning.record import read_grad_norms
from srn_lightning.train import run


class StepSpy(Callback):
    """Records (W, U, b, all) before each step and the update the optimizer applied, so that
    update / -lr is the gradient the step used: the post-clip gradient."""

    def __init__(self):
        self.used = []  # per step: {name: gradient the optimizer applied}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        lr = pl_module.hparams.lr
        self.used.append(
            {n: (self._before[n] - p.detach()) / lr for n, p in pl_module.named_parameters()}
        )


@pytest.fixture
def clipped_run(make_cfg, tmp_path):
    def go(*overrides):
        spy = StepSpy()
        metrics = run(make_cfg("trainer.max_epochs=2", "grad_time=false", *overrides), tmp_path, callbacks=[spy])
        return metrics, read_grad_norms(tmp_path / "grad_norms.csv"), spy.used

    return go


def norm(t):
    return torch.linalg.vector_norm(t).item()


def global_norm(step):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in step.values()])).item()


def test_norm_bounds_the_global_norm_of_the_step(clipped_run):
    metrics, rows, used = clipped_run("clip=norm")
    assert max(rows["total_pre"]) > 5.0  # the explosion happened ...
    assert max(rows["total_post"]) <= 5.0 + 1e-4  # ... and the step never saw it
    for step, total_post in zip(used, rows["total_post"]):
        assert global_norm(step) <= 5.0 + 1e-3
        assert global_norm(step) == pytest.approx(total_post, rel=1e-3)
    # global clipping scales every gradient by the same factor
    i = max(range(len(used)), key=lambda k: rows["total_pre"][k])
    factor = rows["W_post"][i] / rows["W_pre"][i]
    assert factor < 1 and rows["U_post"][i] / rows["U_pre"][i] == pytest.approx(factor, rel=1e-4)


def test_norm_each_bounds_every_parameter_by_its_own_norm(clipped_run):
    metrics, rows, used = clipped_run("clip=norm_each")
    assert max(rows["W_pre"]) > 5.0
    for name in ("W", "U", "b"):
        assert max(rows[f"{name}_post"]) <= 5.0 * (1 + 1e-5)
    for step in used:
        for g in step.values():
            assert norm(g) <= 5.0 * (1 + 1e-3)
    # a parameter under the threshold is left alone (the book's Paddle ClipGradByNorm)
    small = [i for i, b in enumerate(rows["b_pre"]) if b < 5.0]
    assert small and all(rows["b_post"][i] == pytest.approx(rows["b_pre"][i], rel=1e-6) for i in small)
    # ... while the global norm may stay above 5: 6 parameters of up to 5 each
    assert max(rows["total_post"]) > 5.0


def test_value_clamps_every_element(clipped_run):
    metrics, rows, used = clipped_run("clip=value")
    assert max(rows["W_pre"]) > 0.5 * 32  # some element above 0.5 for sure
    for step in used:
        for g in step.values():
            assert g.abs().max().item() <= 0.5 + 1e-5
    assert any(g.abs().max().item() == pytest.approx(0.5, abs=1e-5) for s in used for g in s.values())


def test_threshold_is_overridable(clipped_run):
    metrics, rows, used = clipped_run("clip=norm", "clip.val=1.0")
    assert metrics["clip_val"] == 1.0
    assert max(rows["total_post"]) <= 1.0 + 1e-4 and max(rows["total_pre"]) > 1.0


def test_none_leaves_gradients_alone(clipped_run):
    metrics, rows, used = clipped_run("clip=none")
    for name in ("W", "U", "b", "total"):
        assert rows[f"{name}_pre"] == rows[f"{name}_post"]
    assert max(rows["total_pre"]) > 100
    for step, w in zip(used, rows["W_post"]):
        assert norm(step["model.rnn_model.W"]) == pytest.approx(w, rel=1e-3)


def grads_of(*values):
    params = [torch.nn.Parameter(torch.zeros(len(v))) for v in values]
    for p, v in zip(params, values):
        p.grad = torch.tensor(v)
    return params


@pytest.mark.parametrize("mode,expected", [
    ("none", [[3.0, 4.0], [0.0, 12.0]]),
    # global norm 13 -> all scaled by 6.5 / 13
    ("norm", [[1.5, 2.0], [0.0, 6.0]]),
    # every element clamped to [-6.5, 6.5]
    ("value", [[3.0, 4.0], [0.0, 6.5]]),
    # each by its own norm: 5 stays (under 6.5), 12 -> 6.5
    ("norm_each", [[3.0, 4.0], [0.0, 6.5]]),
])
def test_the_four_modes_on_known_gradients(mode, expected):
    params = grads_of([3.0, 4.0], [0.0, 12.0])
    clip_gradients_(params, mode, None if mode == "none" else 6.5)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, torch.tensor(e))


def test_lightning_clips_norm_and_value_the_project_clips_norm_each():
    assert trainer_kwargs("norm", 5.0) == {"gradient_clip_val": 5.0, "gradient_clip_algorithm": "norm"}
    assert trainer_kwargs("value", 0.5) == {"gradient_clip_val": 0.5, "gradient_clip_algorithm": "value"}
    assert trainer_kwargs("norm_each", 5.0) == trainer_kwargs("none", None) == {}
    with pytest.raises(ValueError, match="clip mode 'bogus'"):
        clip_gradients_(grads_of([1.0]), "bogus", 1.0)
