"""The seeds of one setting trained side by side (srn_lightning/stacked.py): each seed's record is
its own run's, on the CPU with one thread. The expected files are those of each seed's run alone
(`train.run`), made in the same test."""

import json

import pytest
import torch

import torch.nn.functional as F

from srn_lightning import console, record, stacked, train
from srn_lightning.model import SeqClassifier
from srn_lightning.resume import load_checkpoint
from srn_lightning.stacked_model import StackedSeqClassifier

# the seeds' own runs and their group: small, every piece of the record on (grad_time at every step,
# clipping, the memory experiment's Adam and mean loss for the LSTM)
SETTINGS = {
    "srn": ["model=srn", "clip=norm_each", "trainer.max_epochs=2"],
    "lstm": ["model=lstm", "experiment=memory", "trainer.max_epochs=2", "batch_size=32", "record_every=3"],
    "gru": ["model=gru", "clip=value", "trainer.max_epochs=2"],
}


def solo_and_group(make_cfg, tmp_path, setting, seeds=(0, 1)):
    cfgs = [make_cfg("length=10", f"seed={s}", *SETTINGS[setting]) for s in seeds]
    solo = [train.run(c, tmp_path / f"solo{s}") for c, s in zip(cfgs, seeds)]
    group = stacked.run_group([(c, tmp_path / f"stacked{s}") for c, s in zip(cfgs, seeds)])
    return solo, group


def without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "fit_seconds"}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["srn", "lstm", "gru"])
def test_each_seed_of_a_stacked_group_leaves_its_own_runs_record(make_cfg, tmp_path, setting):
    solo, group = solo_and_group(make_cfg, tmp_path, setting)
    for s, (alone, stacked_metrics) in enumerate(zip(solo, group)):
        alone_dir, stacked_dir = tmp_path / f"solo{s}", tmp_path / f"stacked{s}"
        assert without_seconds(stacked_metrics) == without_seconds(alone)
        assert without_seconds(json.loads((stacked_dir / "metrics.json").read_text())) == without_seconds(alone)
        for name in (record.CSV_NAME, record.GRAD_TIME_CSV, "tb/hparams.yaml"):
            assert (stacked_dir / name).read_bytes() == (alone_dir / name).read_bytes(), name
        assert scalars(stacked_dir) == scalars(alone_dir)
        # its figures, drawn in processes of their own (as many at a time as there are cores)
        pngs = sorted(p.name for p in alone_dir.glob("*.png"))
        assert pngs and pngs == sorted(p.name for p in stacked_dir.glob("*.png"))
        for name in pngs:
            assert (stacked_dir / name).read_bytes() == (alone_dir / name).read_bytes(), name
        assert images(stacked_dir) == images(alone_dir) and len(images(alone_dir)) == len(pngs)
        assert stacked_metrics["seed"] == s and stacked_metrics["steps"] > 0
    assert group[0]["test_acc"] != group[1]["test_acc"] or group[0]["W_pre_max"] != group[1]["W_pre_max"]


def scalars(run_dir) -> dict:
    """Every TensorBoard scalar of a run: tag -> [(step, value)] (wall times left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def images(run_dir) -> dict:
    """Every TensorBoard image of a run: tag -> [(step, its PNG bytes)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    return {tag: [(e.step, e.encoded_image_string) for e in events.Images(tag)] for tag in events.Tags()["images"]}


def tensors_equal(a, b) -> bool:
    """Two checkpoint values equal, tensors bit for bit; a path differs in its run dir only."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


@pytest.mark.slow
def test_a_stacked_seeds_checkpoints_are_its_own_runs(make_cfg, tmp_path):
    """Weights, optimizer state, monitors' rows, data order, loops: those its own run saves."""
    solo_and_group(make_cfg, tmp_path, "lstm")
    for s in (0, 1):
        names = sorted(p.name for p in (tmp_path / f"solo{s}" / "checkpoints").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"stacked{s}" / "checkpoints").iterdir())
        for name in names:
            alone = load_checkpoint(tmp_path / f"solo{s}" / "checkpoints" / name, name)
            mine = load_checkpoint(tmp_path / f"stacked{s}" / "checkpoints" / name, name)
            text = repr(mine["callbacks"]).replace(f"stacked{s}", f"solo{s}")
            assert list(mine) == list(alone)
            for key in alone:
                if key != "callbacks":
                    assert tensors_equal(mine[key], alone[key]), key
            assert list(mine["callbacks"]) == list(alone["callbacks"])
            for key, state in alone["callbacks"].items():
                if key.startswith("ModelCheckpoint"):
                    assert repr(state) in text, key  # the same, but for the run dir in its paths
                else:
                    assert tensors_equal(mine["callbacks"][key], state), key


@pytest.mark.slow
def test_a_stacked_seed_resumed_alone_goes_on_as_its_own_run(make_cfg, tmp_path):
    cfg = make_cfg("length=10", "seed=1", *SETTINGS["srn"])
    two = [make_cfg("length=10", f"seed={s}", *SETTINGS["srn"]) for s in (0, 1)]
    stacked.run_group([(c, tmp_path / f"stacked{i}") for i, c in enumerate(two)])
    three = make_cfg("length=10", "seed=1", *SETTINGS["srn"], "trainer.max_epochs=3",
                     f"resume={tmp_path / 'stacked1' / 'checkpoints' / 'last.ckpt'}")
    train.run(three, tmp_path / "stacked1")
    train.run(make_cfg("length=10", "seed=1", *SETTINGS["srn"], "trainer.max_epochs=3"), tmp_path / "solo")
    assert cfg.seed == 1
    for name in (record.CSV_NAME, record.GRAD_TIME_CSV):
        assert (tmp_path / "stacked1" / name).read_bytes() == (tmp_path / "solo" / name).read_bytes()


@pytest.mark.parametrize("cell", ["srn", "lstm", "gru"])
def test_the_stacked_model_gives_each_seed_its_own_models_loss_and_gradients(cell):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(SeqClassifier(10, 32, 32, 19, cell))  # the sizes runs have
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 10, (3, 8, 10), generator=gen), torch.randint(0, 19, (3, 8), generator=gen)
    alone = []
    for s, m in enumerate(models):
        loss = F.cross_entropy(m(x[s]), y[s], reduction="sum")
        loss.backward()
        alone.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    stacked_model = StackedSeqClassifier(models, cell)
    logits = stacked_model(x)
    losses = torch.stack([F.cross_entropy(logits[s], y[s], reduction="sum") for s in range(3)])
    losses.sum().backward()
    stacked_model.seed_views(models)
    stacked_model.share_grads()
    for s, m in enumerate(models):
        assert torch.equal(losses[s].detach(), alone[s][0])
        for n, p in m.named_parameters():
            assert torch.equal(p.grad, alone[s][1][n]), n
            assert p.data.data_ptr() == stacked_model.param(n).data[s].data_ptr()  # a view: updated with it


def test_what_cannot_be_stacked_is_named(make_cfg):
    srn = [make_cfg(f"seed={s}") for s in (0, 1)]
    assert stacked.stackable(srn) is None
    assert "num_workers" in stacked.stackable([make_cfg(f"seed={s}", "data.num_workers=1") for s in (0, 1)])
    assert stacked.stackable(srn[:1]) == "one seed"
    assert "chdir" in stacked.stackable(srn, chdir=True)


def test_sizes_where_a_batched_matmul_is_not_the_single_ones_are_found():
    """At input and hidden size 8 a batched matmul sums W's gradient in another order than the
    single one here: such a group runs its seeds one by one."""
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        models.append(SeqClassifier(10, 8, 8, 19, "srn"))
    same = []
    for seed in range(2):
        torch.manual_seed(seed)
        same.append(SeqClassifier(10, 32, 32, 19, "srn"))
    assert "rnn_model.W" in stacked_model_differs(models)
    assert stacked_model_differs(same) is None


def stacked_model_differs(models):
    from srn_lightning.stacked_model import differs_from_single

    return differs_from_single(models, "srn", [8, 4], 10, "sum")


@pytest.mark.parametrize("gates", [1, 4])
def test_a_norm_over_a_seeds_slice_is_the_norm_of_its_own_gradient(gates):
    """What `stacked.SeedGradNorms` relies on, at the shapes of the classifier's parameters."""
    from torch.nn.utils import get_total_norm

    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        scale = 10.0 ** torch.randint(-8, 8, (), generator=gen).item()
        grads = [scale * torch.randn(5, *shape, generator=gen) for shape in
                 ((32, 32 * gates), (32, 32 * gates), (1, 32 * gates), (10, 32), (19, 32), (19,))]
        per = stacked.SeedGradNorms._per_seed(grads)
        total = torch.linalg.vector_norm(per, dim=1)
        for s in range(5):
            own = [g[s].clone() for g in grads]
            assert torch.equal(per[s], torch.stack([torch.linalg.vector_norm(g) for g in own]))
            assert torch.equal(total[s], get_total_norm(own))


@pytest.mark.slow
def test_a_group_whose_seed_diverges_leaves_nothing_for_its_seeds_to_run_one_by_one(make_cfg, tmp_path):
    """A diverged run stops at its step; a stacked model would go on: the group gives way."""
    from srn_lightning import attempts

    cfgs = [make_cfg("length=10", f"seed={s}", "lr=1e30", "trainer.max_epochs=2") for s in (0, 1)]
    with pytest.raises(stacked.Unstacked, match="a seed diverged at step 0"):
        stacked.run_group([(c, tmp_path / f"stacked{i}") for i, c in enumerate(cfgs)])
    assert train.run(cfgs[0], tmp_path / "solo")["status"] == "diverged"  # as its own run says
    for i in (0, 1):
        assert not any((tmp_path / f"stacked{i}" / n).exists() for n in (*attempts.RUN_FILES, *attempts.RUN_DIRS))


def test_a_figure_that_fails_in_its_drawing_process_fails_each_seed_naming_the_file(make_cfg, tmp_path,
                                                                                     monkeypatch):
    import errno

    from srn_lightning import plots
    from srn_lightning.errors import RunFailed

    def full_disk(*args, **kwargs):  # in the drawing process, forked with this patch
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "grad_time.png"))

    monkeypatch.setattr(plots, "plot_grad_time", full_disk)
    monkeypatch.setattr(console, "cores", lambda: 2)  # drawn side by side on any machine
    cfgs = [make_cfg("length=10", f"seed={s}", "trainer.max_epochs=1") for s in (0, 1)]
    with pytest.raises(RunFailed, match="failed during figures: .*No space left.*grad_time.png"):
        stacked.run_group([(c, tmp_path / f"stacked{s}") for s, c in enumerate(cfgs)])
    for s in (0, 1):
        m = json.loads((tmp_path / f"stacked{s}" / "metrics.json").read_text())
        assert (m["status"], m["phase"], m["epochs"]) == ("failed", "figures", 1) and "grad_time.png" in m["error"]


def test_a_signal_while_a_group_draws_stops_each_seed_with_its_record_and_its_drawing_processes_end(
        make_cfg, tmp_path, monkeypatch):
    import multiprocessing
    import os
    import signal
    import time

    from srn_lightning import plots

    plot_grad_norms, group = plots.plot_grad_norms, os.getpid()

    def ctrl_c_then_draw(columns, out_stem, *args, **kwargs):  # in a drawing process: one Ctrl-C
        if os.getpid() != group and out_stem.parent.name == "stacked0":  # for the group's process
            os.kill(group, signal.SIGINT)
        return plot_grad_norms(columns, out_stem, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_grad_norms", ctrl_c_then_draw)
    monkeypatch.setattr(console, "cores", lambda: 2)  # drawn side by side on any machine
    cfgs = [make_cfg("length=10", f"seed={s}", "trainer.max_epochs=1") for s in (0, 1)]
    with pytest.raises(SystemExit, match=r"interrupted \(SIGINT during figures\)"):
        stacked.run_group([(c, tmp_path / f"stacked{s}") for s, c in enumerate(cfgs)])
    for s in (0, 1):
        m = json.loads((tmp_path / f"stacked{s}" / "metrics.json").read_text())
        assert (m["status"], m["phase"], m["signal"], m["epochs"]) == ("interrupted", "figures", "SIGINT", 1)
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_a_signal_that_reaches_a_drawing_process_is_left_to_the_group(make_cfg, tmp_path, monkeypatch):
    """Ctrl-C reaches every process of the terminal's group: the group's own process acts on it (and
    writes the records); a drawing process, which would otherwise stop on its own, goes on."""
    import os
    import signal

    from srn_lightning import plots

    plot_grad_norms, group = plots.plot_grad_norms, os.getpid()

    def ctrl_c_here_then_draw(*args, **kwargs):
        if os.getpid() != group:  # in a drawing process
            os.kill(os.getpid(), signal.SIGINT)
        return plot_grad_norms(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_grad_norms", ctrl_c_here_then_draw)
    monkeypatch.setattr(console, "cores", lambda: 2)
    cfgs = [make_cfg("length=10", f"seed={s}", "trainer.max_epochs=1") for s in (0, 1)]
    records = stacked.run_group([(c, tmp_path / f"stacked{s}") for s, c in enumerate(cfgs)])
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert all((tmp_path / f"stacked{s}" / "grad_norms.png").exists() for s in (0, 1))
