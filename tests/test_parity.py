"""Numerical parity: the project's Lightning run trains exactly as a hand-written PyTorch loop does
(benchmarks/plain_loop.py: the same model, init, batch order and clipping, written with torch alone),
checked by the parity benchmark's own comparison."""

import pytest
import torch

from benchmarks.parity import MODES, lightning_fit, parity, plain_fit


@pytest.mark.parametrize("clip", MODES)
def test_lightning_run_matches_a_plain_torch_loop(clip, make_cfg, tmp_path):
    cfg = make_cfg(f"clip={clip}", "trainer.max_epochs=2", "grad_time=false")
    light = lightning_fit(cfg, tmp_path / "lightning")
    plain = plain_fit(cfg, tmp_path / "plain")
    assert len(light["losses"]) == len(plain["losses"]) == 10
    parity(light, plain)  # raises unless per-step losses, norms and final weights agree
    assert light["dev_best"] == pytest.approx(plain["dev_best"])
    norms = light["norms"]  # W, U, b, total before clipping, then after
    if clip != "none":  # the clip really acted, on both sides alike
        assert (norms[:, 3] > norms[:, 7] + 1e-3).any()
    else:
        assert torch.equal(norms[:, :4], norms[:, 4:])
