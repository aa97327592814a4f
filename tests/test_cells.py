"""The cells (SRN, LSTM, GRU) and the gradient's flow through time, each checked against the book's
equations written out here gate by gate, with their own gradients from autograd."""

import math

import pytest
import torch
from lightning.pytorch import Callback

from srn_lightning.model import CELLS, SeqClassifier
from srn_lightning.train import run

from .conftest import compose_cfg


def reference(cell: str, x, W, U, b):
    """The cell's hidden states h_1..h_T (and for the LSTM c_1..c_T), from the equations, with each
    gate's own matrices cut out of W, U, b."""
    hidden = U.shape[0]
    blocks = {name: (W[:, k * hidden:(k + 1) * hidden], U[:, k * hidden:(k + 1) * hidden],
                     b[:, k * hidden:(k + 1) * hidden])
              for k, name in enumerate({"srn": "a", "lstm": "ifoc", "gru": "zrn"}[cell])}

    def gate(name, x_t, h, act):
        Wg, Ug, bg = blocks[name]
        return act(x_t @ Wg + h @ Ug + bg)

    h = torch.zeros(x.shape[0], hidden)
    c = torch.zeros_like(h)
    hs, cs = [], []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        if cell == "srn":
            h = gate("a", x_t, h, torch.tanh)
        elif cell == "lstm":
            i, f, o = (gate(g, x_t, h, torch.sigmoid) for g in "ifo")
            c = f * c + i * gate("c", x_t, h, torch.tanh)
            h = o * torch.tanh(c)
            cs.append(c)
        else:
            z, r = gate("z", x_t, h, torch.sigmoid), gate("r", x_t, h, torch.sigmoid)
            Wn, Un, bn = blocks["n"]
            n = torch.tanh(x_t @ Wn + (r * h) @ Un + bn)
            h = z * h + (1 - z) * n
        hs.append(h)
    return hs, cs


@pytest.mark.parametrize("cell,gates", [("srn", 1), ("lstm", 4), ("gru", 3)])
def test_every_cell_has_the_books_names_and_a_xavier_block_per_gate(cell, gates):
    torch.manual_seed(0)
    model = SeqClassifier(10, 32, 16, 19, cell)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n.startswith("rnn_model.")}
    assert shapes == {"rnn_model.W": (32, 16 * gates), "rnn_model.U": (16, 16 * gates),
                      "rnn_model.b": (1, 16 * gates)}
    rnn = model.rnn_model
    for p in (rnn.W, rnn.U, rnn.b):
        for block in p.detach().split(16, dim=1):
            bound = math.sqrt(6 / (block.shape[0] + block.shape[1]))  # Xavier-uniform of the block
            assert block.abs().max() <= bound and block.abs().max() > 0.8 * bound


class FirstStep(Callback):
    """The first training step's batch, the weights it started from, and its gradients."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.batch = [t.clone() for t in batch]
            self.weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}


@pytest.mark.parametrize("cell", ["srn", "lstm", "gru"])
def test_a_training_step_s_gradients_and_flow_match_the_equations(cell, data_dir, tmp_path):
    spy = FirstStep()
    cfg = compose_cfg(f"data.dir={data_dir}", "trainer.enable_progress_bar=false", f"model={cell}",
                      "trainer.max_epochs=2", "length=10")
    metrics = run(cfg, tmp_path, callbacks=[spy])
    assert metrics["status"] == "completed" and metrics["cell"] == cell and metrics["steps"] == 10

    w = {n: p.clone().requires_grad_() for n, p in spy.weights.items()}
    x, y = spy.batch
    hs, cs = reference(cell, w["model.embedding.weight"][x], w["model.rnn_model.W"],
                       w["model.rnn_model.U"], w["model.rnn_model.b"])
    logits = hs[-1] @ w["model.linear.weight"].T + w["model.linear.bias"]
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    names = ["model.rnn_model.W", "model.rnn_model.U", "model.rnn_model.b"]
    grads = torch.autograd.grad(loss, [w[n] for n in names] + hs + cs)
    for name, g in zip(names, grads):
        torch.testing.assert_close(spy.grads[name], g, rtol=1e-4, atol=1e-4)

    with open(tmp_path / "grad_time.csv") as f:
        header, first = f.readline().strip().split(","), f.readline().strip().split(",")
    row = dict(zip(header, map(float, first)))
    g_t = [torch.linalg.vector_norm(g).item() for g in grads[3:]]
    columns = [f"h_{t}" for t in range(1, 11)] + ([f"c_{t}" for t in range(1, 11)] if cell == "lstm" else [])
    assert [row[c] for c in columns] == pytest.approx(g_t, rel=1e-4, abs=1e-7)
    sigma = torch.linalg.svdvals(spy.weights["model.rnn_model.U"])[0].item()
    assert row["sigma_max_U"] == pytest.approx(sigma, rel=1e-5)
    assert metrics["sigma_max_U_first"] == pytest.approx(sigma, rel=1e-5)
    assert metrics["vanishing_ratio_first"] == pytest.approx(g_t[0] / g_t[9], rel=1e-4)


def test_the_switch_turns_the_flow_off(make_cfg, tmp_path):
    metrics = run(make_cfg("grad_time=false", "trainer.max_epochs=1"), tmp_path)
    assert not (tmp_path / "grad_time.csv").exists() and not (tmp_path / "grad_time.png").exists()
    assert "vanishing_ratio_first" not in metrics and (tmp_path / "grad_norms.csv").exists()


def test_record_every_k_samples_the_flow_and_the_logged_scalars_and_nothing_else(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    every = run(make_cfg("trainer.max_epochs=2"), tmp_path / "every")  # 10 steps, 0..9
    sampled = run(make_cfg("trainer.max_epochs=2", "record_every=3"), tmp_path / "sampled")
    read = lambda run_dir, name: (run_dir / name).read_text().splitlines()  # noqa: E731
    # training and its per-step grad-norm record are untouched
    assert read(tmp_path / "sampled", "grad_norms.csv") == read(tmp_path / "every", "grad_norms.csv")
    # the flow: the rows of steps 0, 3, 6, 9, the same numbers as the every-step run's
    flow = read(tmp_path / "every", "grad_time.csv")
    assert read(tmp_path / "sampled", "grad_time.csv") == [flow[0]] + [flow[1 + s] for s in (0, 3, 6, 9)]
    assert (tmp_path / "sampled" / "grad_time.png").stat().st_size > 1000  # drawn from the sampled rows
    # step 9 is the run's last: the summary is the every-step run's
    assert {k: v for k, v in sampled.items() if k != "fit_seconds"} == {
        k: v for k, v in every.items() if k != "fit_seconds"}
    events = EventAccumulator(str(tmp_path / "sampled" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    norms = [line.split(",") for line in read(tmp_path / "every", "grad_norms.csv")]
    for tag, column in (("train/loss", "loss"), ("grad_norm_pre/W", "W_pre"),
                        ("grad_flow/sigma_max_U", None)):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [0, 3, 6, 9]
        if column:
            i = norms[0].index(column)
            assert [e.value for e in scalars] == pytest.approx([float(norms[1 + s][i]) for s in (0, 3, 6, 9)])


def test_the_memory_experiment_samples_and_record_every_1_asks_for_every_step():
    assert compose_cfg("experiment=memory").record_every == 20
    assert compose_cfg("experiment=memory", "record_every=1").record_every == 1
    assert compose_cfg().record_every == 1  # the book's run: every step


def test_the_book_s_run_shows_where_the_gradient_dies(make_cfg, tmp_path):
    run(make_cfg("trainer.max_epochs=4"), tmp_path)
    with open(tmp_path / "grad_time.csv") as f:
        header = f.readline().strip().split(",")
        rows = [dict(zip(header, map(float, line.split(",")))) for line in f]
    assert rows[0]["sigma_max_U"] > 1  # explosion is possible from the start ...
    assert rows[-1]["sigma_max_U"] > 10 * rows[0]["sigma_max_U"]  # ... and the first steps blow U up
    last = rows[-1]
    assert last["h_20"] > 0 and last["h_1"] == last["h_2"] == 0.0  # nothing reaches the two digits
    for suffix in ("png", "pdf"):
        assert (tmp_path / f"grad_time.{suffix}").stat().st_size > 1000


def test_the_experiment_presets_compose():
    memory = compose_cfg("experiment=memory", "model=lstm")
    assert (memory.optimizer.name, memory.lr, memory.reduction, memory.batch_size,
            memory.trainer.max_epochs, memory.clip.mode, memory.model.cell) == (
        "adam", 0.001, "mean", 8, 500, "none", "lstm")
    explosion, default = compose_cfg("experiment=explosion"), compose_cfg()
    assert explosion == default  # the book's 6.2 is the project's default run
    from hydra import compose, initialize_config_dir

    from srn_lightning.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        sweep = compose("config", overrides=["experiment=weight_decay"], return_hydra_config=True)
    assert str(sweep.hydra.mode) == "RunMode.MULTIRUN"
    assert sweep.hydra.sweeper.params.weight_decay == "0.0,0.01,0.1,1.0"
    assert (sweep.lr, sweep.clip.mode, sweep.optimizer.name) == (0.2, "none", "sgd")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_the_model_group_has_a_config_per_cell(cell):
    assert compose_cfg(f"model={cell}").model.cell == cell
