"""Numerical parity: the project's Lightning run trains exactly as a hand-written PyTorch loop does
(benchmarks/plain_loop.py: the same model, init, batch order and clipping, written with torch alone)."""

import pytest
import torch
from lightning.pytorch import Callback

from benchmarks.plain_loop import fit_plain
from srn_lightning.callbacks import read_grad_norms
from srn_lightning.train import run

NORMS = [f"{n}_{when}" for when in ("pre", "post") for n in ("W", "U", "b", "total")]


@pytest.fixture(autouse=True)
def one_thread():
    """A 32-unit SRN gains nothing from torch's thread pool, and on a busy shared machine a pool
    waiting for its second core makes a run up to ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FinalWeights(Callback):
    """The weights at the end of fit (the test stage then loads the best checkpoint)."""

    def on_fit_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


@pytest.mark.parametrize("clip", ["none", "norm", "value", "norm_each"])
def test_lightning_run_matches_a_plain_torch_loop(clip, make_cfg, tmp_path):
    cfg = make_cfg(f"clip={clip}", "trainer.max_epochs=3")
    final = FinalWeights()
    metrics = run(cfg, tmp_path / "lightning", callbacks=[final])
    plain = fit_plain(cfg, tmp_path / "plain")

    rows = read_grad_norms(tmp_path / "lightning" / "grad_norms.csv")
    losses = torch.tensor(rows["loss"], dtype=torch.float64)
    assert len(losses) == len(plain["losses"]) == 15
    torch.testing.assert_close(losses, plain["losses"].double(), rtol=1e-5, atol=1e-5)
    norms = torch.tensor([rows[c] for c in NORMS], dtype=torch.float64).T
    torch.testing.assert_close(norms, plain["norms"].double(), rtol=1e-5, atol=1e-6)
    for name, value in plain["model"].state_dict().items():
        torch.testing.assert_close(final.state[name], value, rtol=1e-4, atol=1e-5)
    assert metrics["dev_best"] == pytest.approx(plain["dev_best"])
    if clip != "none":  # the clip really acted, on both sides alike
        assert (norms[:, 3] > norms[:, 7] + 1e-3).any()
