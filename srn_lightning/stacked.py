"""The seeds of one setting trained side by side: one process, one Trainer, one stacked model
(`stacked_model.StackedSeqClassifier`), and for each seed the run dir and record its own run
would leave.

Each seed keeps what is its own: its initial weights (its model built under its seed, as its run
builds it), its data order (its own shuffling generator), its loss, its gradient norms, its
clipping, its optimizer state (SGD and Adam work element by element, so one optimizer over the
stacked parameters is each seed's), its best-on-dev checkpoint and its test. Its monitors,
checkpoints and TensorBoard logger are those of its run, each seeing the seed's own model
(`SeedCallbacks`; the gradient norms of all seeds at once, `SeedGradNorms`), its metrics
(`SeedLogger`), its part of every checkpoint (`SeedCheckpointIO`).

    run_group([(cfg_seed0, dir0), (cfg_seed1, dir1), ...], sweep_dir)

`stackable` says why a group cannot be stacked (its seeds then run one by one). A group gives way
(`Unstacked`, nothing of it kept) when its stacked model would not give each seed its own model's
bits at the run's sizes on this machine (`numbers_differ`, checked before training), or when a seed
diverges (its run stops at that step; a stacked model goes on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, NamedTuple

import hydra
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from srn_lightning import (answer, attempts, clipping, cluster, console, interrupts, measurements, plots, record,
                           train)
from srn_lightning.callbacks import (CheckedCheckpointIO, Diverged, GradFlowMonitor, GradNormMonitor, RunConfig,
                                     StopOnNonFinite)
from srn_lightning.data import NUM_CLASSES, split_batch_size, split_size
from srn_lightning.datamodule import DigitSumDataModule
from srn_lightning.files import naming
from srn_lightning.job_process import die_with_parent
from srn_lightning.module import OPTIMIZERS, SRNClassifier, module_from_config
from srn_lightning.profiler import profiler_kwargs
from srn_lightning.resume import RUN_CONFIG_STATE, run_config, take_checked
from srn_lightning.stacked_model import CELLS, SeedCell, StackedSeqClassifier, differs_from_single

log = logging.getLogger(__name__)

MARK = "@seed"  # a metric of one seed: "val/acc@seed2" is the third seed's "val/acc"


def stackable(cfgs: list, chdir: bool = False) -> str | None:
    """Why the runs of `cfgs` (one setting, several seeds) cannot be trained as one stacked model;
    None if they can. Their records would not be those of their own runs otherwise."""
    cfg = cfgs[0]
    if len(cfgs) < 2:
        return "one seed"
    if str(cfg.model.cell) not in CELLS:
        return f"model.cell={cfg.model.cell} (stacked: {', '.join(CELLS)})"
    if str(cfg.optimizer.name) not in OPTIMIZERS:
        return f"optimizer={cfg.optimizer.name}"
    if cfg.trainer.get("accelerator", "cpu") not in ("cpu", "auto") or torch.cuda.is_available():
        return "not on the CPU (each seed bit-identical to its run is measured on the CPU)"
    if cfg.resume is not None:
        return "resume="
    if chdir:
        return "hydra.job.chdir=true (each run would change to its own dir)"
    if cfg.data.num_workers:
        return "data.num_workers > 0"
    return None


class Unstacked(Exception):
    """The group's seeds must run one by one: the stacked model would not give a seed its own
    numbers here, or a seed diverged (its run stops at that step, which a stacked model does not).
    Nothing of the group's attempt is kept."""


# ---- the LightningModule and DataModule of a group -------------------------------------------

class StackedClassifier(SRNClassifier):
    """The LightningModules of a group's seeds (`SRNClassifier`s, each built under its seed) as one:
    their models stacked; a loss, metrics and clipping per seed. The seeds' own modules stay, with
    their parameters and gradients views of the stacked ones (`seed_modules`), for what works on
    one seed's run: its monitors, its clipping, its checkpoint. Validation and test are the
    single module's steps, over every seed's metrics.

    Example::

        StackedClassifier(**seed_modules[0].hparams).stack(seed_modules)
    """

    def stack(self, seed_modules: list[SRNClassifier]) -> StackedClassifier:
        """This module (built with the seeds' hyperparameters, as each one's run saves them) with
        the seeds' models stacked in place of its single one, and a set of metrics per seed."""
        self.seed_modules = list(seed_modules)  # a plain list: not part of this module's parameters
        models = [m.model for m in seed_modules]
        self.model = StackedSeqClassifier(models, self.hparams.cell)
        self.model.seed_views(models)
        n = len(seed_modules)
        self.val_acc = nn.ModuleList(MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in range(n))
        self.test_acc = nn.ModuleList(MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in range(n))
        self.val_loss = nn.ModuleList(MeanMetric(nan_strategy="disable") for _ in range(n))
        self.test_loss = nn.ModuleList(MeanMetric(nan_strategy="disable") for _ in range(n))
        self.seed_losses: torch.Tensor | None = None
        return self

    def training_step(self, batch, batch_idx):
        x = torch.stack([b[0] for b in batch])  # each seed's own batch
        y = torch.stack([b[1] for b in batch])
        logits = self(x)
        self.seed_losses = torch.stack([F.cross_entropy(logits[s], y[s], reduction=self.hparams.reduction)
                                        for s in range(len(batch))])
        return self.seed_losses.sum()  # the seeds share no parameter: each one's gradient is its own loss's

    def on_after_backward(self) -> None:
        self.model.share_grads()

    def _eval_step(self, batch, accs, losses) -> None:
        x, y = batch
        logits = self(x)  # every seed on the same batch
        for s, (acc, loss) in enumerate(zip(accs, losses)):
            acc.update(logits[s], y)
            loss.update(F.cross_entropy(logits[s], y, reduction="none"))

    def _log_eval_epoch(self, accs, losses, prefix: str) -> None:
        values = {}
        for s, (acc, loss) in enumerate(zip(accs, losses)):
            values |= {f"{prefix}/loss{MARK}{s}": loss.compute(), f"{prefix}/acc{MARK}{s}": acc.compute()}
            acc.reset()
            loss.reset()
        self.log_dict(values)

    def configure_optimizers(self):
        # the stacked parameters in the order of a seed's own: its optimizer state is their slice
        return OPTIMIZERS[self.hparams.optimizer](
            self.model.params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # each seed's gradients on their own, with the torch calls its run makes (clipping.py)
        for m in self.seed_modules:
            clipping.clip_gradients_(m.parameters(), self.hparams.clip_mode, self.hparams.clip_val)


class StackedData(LightningDataModule):
    """The seeds' DataModules as one: a training batch is each seed's own (its own shuffling
    generator), dev and test are the same batches for every seed."""

    def __init__(self, seed_data: list[DigitSumDataModule]) -> None:
        super().__init__()
        self.seed_data = seed_data

    def prepare_data(self) -> None:
        self.seed_data[0].prepare_data()  # the same files for every seed

    def setup(self, stage: str | None = None) -> None:
        first = self.seed_data[0]
        first.setup(stage)
        for d in self.seed_data[1:]:
            d.splits = first.splits

    def train_dataloader(self):
        return CombinedLoader([d.train_dataloader() for d in self.seed_data], mode="min_size")

    def val_dataloader(self):
        return self.seed_data[0].val_dataloader()

    def test_dataloader(self):
        return self.seed_data[0].test_dataloader()

    def state_dict(self) -> dict:
        return {"seeds": [d.state_dict() for d in self.seed_data]}

    def load_state_dict(self, state: dict) -> None:
        for d, s in zip(self.seed_data, state["seeds"]):
            d.load_state_dict(s)


# ---- what each seed sees of the group's Trainer --------------------------------------------------

class SeedCallbacks(Callback):
    """Every seed's callbacks (its monitors and their writers, `measurements.Measurement.callbacks`)
    in the group's Trainer, as one: each hook is passed on to each seed's, with the seed's own
    module in place of the stacked one and its own part of the batch (one callback for all seeds:
    Lightning's cost of a callback is paid for every hook of every step)."""

    def __init__(self, seeds: list[tuple]) -> None:
        self.seeds = seeds  # (module, callbacks) of each seed

    def _each(self, hook: str, trainer, *args) -> None:
        for module, callbacks in self.seeds:
            for cb in callbacks:
                getattr(cb, hook)(trainer, module, *args)

    def _each_batch(self, hook: str, trainer, batch, *args) -> None:
        for i, (module, callbacks) in enumerate(self.seeds):
            for cb in callbacks:
                getattr(cb, hook)(trainer, module, *args[:-1], batch[i], args[-1])

    def on_fit_start(self, trainer, pl_module) -> None:
        self._each("on_fit_start", trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._each_batch("on_train_batch_start", trainer, batch, batch_idx)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        for i, (module, callbacks) in enumerate(self.seeds):  # each seed's own loss
            for cb in callbacks:
                cb.on_before_backward(trainer, module, pl_module.seed_losses[i])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._each("on_before_optimizer_step", trainer, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._each_batch("on_train_batch_end", trainer, batch, outputs, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._each("on_train_epoch_end", trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._each("on_save_checkpoint", trainer, checkpoint)

    def on_train_end(self, trainer, pl_module) -> None:
        self._each("on_train_end", trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._each("on_exception", trainer, exception)


class SeedCheckpoints(Checkpoint):
    """Every seed's ModelCheckpoints (its best on dev, its last) in the group's Trainer, as one
    callback (see SeedCallbacks): each hook a ModelCheckpoint acts on is passed on to each, in
    order. A Checkpoint, so that Lightning runs it where it runs a ModelCheckpoint."""

    def __init__(self, checkpoints: list[ModelCheckpoint]) -> None:
        self.checkpoints = checkpoints

    def _each(self, hook: str, trainer, pl_module, *args) -> None:
        for cb in self.checkpoints:
            getattr(cb, hook)(trainer, pl_module, *args)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._each("setup", trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        self._each("on_train_start", trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._each("on_train_batch_end", trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._each("on_train_epoch_end", trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._each("on_validation_end", trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._each("on_exception", trainer, pl_module, exception)

    def on_train_end(self, trainer, pl_module) -> None:
        self._each("on_train_end", trainer, pl_module)


class SeedGradNorms(Callback):
    """Every seed's gradient norms at once (`callbacks.GradNormMonitor`'s row: the seed's loss, the
    norms of its W, U, b and of all its gradients, before and after clipping), each row handed to
    that seed's own monitor; and `callbacks.StopOnNonFinite`'s check for all of them. A norm over a
    seed's slice of the stacked gradient is the norm of its own, bit for bit (the same reduction
    over the same contiguous numbers; tests/test_stacked.py), for a fraction of the operations.
    A group that does not clip measures once a step: its post-clip norms are the pre-clip ones, as
    the seeds' own monitors take them (`GradNormMonitor.clips`)."""

    def __init__(self, stacked: StackedSeqClassifier, seeds: list) -> None:
        self.stacked, self.seeds = stacked, seeds
        self.monitors = [s.measured[0].monitor for s in seeds]
        self.clips = self.monitors[0].clips
        names = {id(p): n for n, p in seeds[0].module.model.named_parameters()}
        tracked = seeds[0].module.tracked_parameters().values()
        self.tracked = [stacked.names.index(names[id(p)]) for p in tracked]
        self._loss: torch.Tensor | None = None
        self._pre: torch.Tensor | None = None

    @staticmethod
    def _per_seed(tensors: list[torch.Tensor]) -> torch.Tensor:
        """[seeds, len(tensors)]: each seed's L2 norm of each tensor's slice."""
        return torch.stack([torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim()))) for t in tensors], dim=1)

    def _norms(self) -> torch.Tensor:
        per = self._per_seed([p.grad for p in self.stacked.params])
        return torch.cat([per[:, self.tracked], torch.linalg.vector_norm(per, dim=1, keepdim=True)], dim=1)

    def on_fit_start(self, trainer, pl_module) -> None:
        for monitor, seed in zip(self.monitors, self.seeds):
            monitor.on_fit_start(trainer, seed.module)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = pl_module.seed_losses.detach()[:, None]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._pre = torch.cat([self._loss, self._norms()], dim=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pre is None:  # no optimizer step ran for this batch
            for monitor in self.monitors:
                monitor.latest = None
            return
        rows = torch.cat([self._pre, self._norms() if self.clips else self._pre[:, 1:]], dim=1)
        self._pre = None
        for monitor, row in zip(self.monitors, rows):
            monitor.append(trainer, row)
        with torch.no_grad():
            weights = torch.linalg.vector_norm(self._per_seed(list(self.stacked.params)), dim=1, keepdim=True)
        if not torch.isfinite(torch.cat([rows, weights], dim=1)).all():
            raise Diverged(trainer.global_step - 1)


class SeedLogger(TensorBoardLogger):
    """A seed's TensorBoard logger in the group's Trainer: the metrics of its seed (`<tag>@seed<i>`)
    under their own tags, and those of no seed (`epoch`); not the other seeds'."""

    def __init__(self, *args, index: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.suffix = f"{MARK}{index}"

    def log_metrics(self, metrics, step=None) -> None:
        own = {k.removesuffix(self.suffix): v for k, v in metrics.items()
               if MARK not in k or k.endswith(self.suffix)}
        if own:
            super().log_metrics(own, step)


class SeedTrainer:
    """The group's Trainer as one seed's record sees it: its steps and epochs, the seed's logger."""

    def __init__(self, trainer, logger: SeedLogger) -> None:
        self._trainer, self.logger = trainer, logger

    @property
    def loggers(self) -> list:
        return [self.logger]

    def __getattr__(self, name: str):
        return getattr(self._trainer, name)


class Seed(NamedTuple):
    """One seed of a group: its config, dir, module, data, measurements, checkpoints and logger."""

    cfg: object
    run_dir: Path
    module: SRNClassifier
    data: DigitSumDataModule
    measured: list
    best: ModelCheckpoint
    last: ModelCheckpoint
    logger: SeedLogger
    run_config: RunConfig


class SeedCheckpointIO(CheckedCheckpointIO):
    """The group's checkpoint IO: a checkpoint of a seed's dir holds what that seed's own run would
    save (its weights, its optimizer state, its monitors' rows, its ModelCheckpoints' and data
    order's state, the epoch and the loops), so `resume=` takes it up as that run's."""

    def __init__(self, seeds: list[Seed]) -> None:
        super().__init__(take_checked)
        self.seeds = seeds

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        home = Path(path).resolve().parent.parent
        (index,) = [i for i, s in enumerate(self.seeds) if s.run_dir.resolve() == home]
        super().save_checkpoint(seed_checkpoint(checkpoint, self.seeds[index], index), path, storage_options)


SOLO_BEST = ModelCheckpoint(monitor="val/acc", mode="max")  # the state keys of a run's own
SOLO_LAST = ModelCheckpoint()


def seed_checkpoint(checkpoint: dict, seed: Seed, index: int) -> dict:
    """The part of the group's `checkpoint` that is `seed`'s, as its own run saves it (in its
    order: Lightning puts the ModelCheckpoints' states last)."""
    callbacks = {m.monitor.state_key: m.monitor.state_dict() for m in seed.measured}
    callbacks[RUN_CONFIG_STATE] = seed.run_config.state_dict()
    callbacks[SOLO_BEST.state_key] = seed.best.state_dict() | {"monitor": SOLO_BEST.monitor}
    callbacks[SOLO_LAST.state_key] = seed.last.state_dict()
    own = {
        "state_dict": {k: v.detach().clone() for k, v in seed.module.state_dict().items()},
        "callbacks": callbacks,
        "optimizer_states": [slice_optimizer_state(s, index) for s in checkpoint["optimizer_states"]],
        "hparams_name": seed.module._hparams_name,
        "hyper_parameters": dict(seed.module.hparams),
        StackedData.__qualname__: None,
    }
    out = {}
    for key, value in checkpoint.items():
        if key == StackedData.__qualname__:
            out[DigitSumDataModule.__qualname__] = seed.data.state_dict()
        else:
            out[key] = own.get(key, value)
    return out


def slice_optimizer_state(state: dict, index: int) -> dict:
    """Seed `index`'s optimizer state: each stacked tensor's slice; a step count (a scalar) as it is."""
    def part(v):
        return v[index].clone() if isinstance(v, torch.Tensor) and v.dim() > 0 else v
    return {"state": {i: {k: part(v) for k, v in s.items()} for i, s in state["state"].items()},
            "param_groups": state["param_groups"]}


# ---- a group's run -----------------------------------------------------------------------------

class Group(NamedTuple):
    trainer: object
    module: StackedClassifier
    datamodule: StackedData
    seeds: list[Seed]


def build(members: list[tuple]) -> Group:
    """The group's Trainer, stacked module and data, and each seed's own pieces; each seed's model
    built under its seed, as its run builds it."""
    from lightning.pytorch import Trainer, seed_everything

    seeds = []
    for index, (cfg, run_dir) in enumerate(members):
        run_dir = Path(run_dir)
        seed_everything(cfg.seed, workers=True, verbose=False)
        data = DigitSumDataModule(hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size,
                                  cfg.seed, cfg.data.num_workers, cfg.data.regenerate)
        module = module_from_config(cfg)
        measured = [seed_tags(m, index) for m in measurements.for_run(cfg, module)]
        best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}",
                              monitor=f"val/acc{MARK}{index}", mode="max", auto_insert_metric_name=False)
        last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1)
        logger = SeedLogger(run_dir, name="tb", version="", default_hp_metric=False, max_queue=1000,
                            index=index)
        seeds.append(Seed(cfg, run_dir, module, data, measured, best, last, logger,
                          RunConfig(run_config(cfg))))
    module = StackedClassifier(**seeds[0].module.hparams).stack([s.module for s in seeds])
    module.model.stop_point = interrupts.stop_point
    for index, s in enumerate(seeds):
        for m in s.measured:
            if isinstance(m.monitor, GradFlowMonitor):  # the seed's slice of the stacked states
                m.monitor.cell = SeedCell(module.model, s.module.model, index)
    cfg = seeds[0].cfg
    trainer = Trainer(
        **cfg.trainer, default_root_dir=seeds[0].run_dir, logger=[s.logger for s in seeds],
        callbacks=[SeedGradNorms(module.model, seeds),
                   SeedCallbacks([(s.module, [cb for m in s.measured for cb in m.callbacks(s.run_dir)
                                              if not isinstance(cb, (GradNormMonitor, StopOnNonFinite))])
                                  for s in seeds]),
                   SeedCheckpoints([cb for s in seeds for cb in (s.best, s.last)])],
        plugins=[SeedCheckpointIO(seeds), cluster.lightning_environment()],
        **clipping.trainer_kwargs(cfg.clip.mode, cfg.clip.val), **profiler_kwargs(cfg.trainer),
    )
    measurements.add_charts(trainer, seeds[0].measured)  # the same charts in every seed's logger
    return Group(trainer, module, StackedData([s.data for s in seeds]), seeds)


def numbers_differ(group: Group) -> str | None:
    """Why the group's stacked model would not give each seed its run's numbers on this machine
    (`stacked_model.differs_from_single`, at the run's batch sizes), else None."""
    cfg = group.seeds[0].cfg
    sizes = {cfg.batch_size, split_batch_size("dev", cfg.batch_size, cfg.length)}
    for split in ("train", "dev"):  # an epoch's last batch, if partial
        last = split_size(split) % split_batch_size(split, cfg.batch_size, cfg.length)
        sizes |= {last} if last else set()
    return differs_from_single([s.module.model for s in group.seeds], str(cfg.model.cell), sizes,
                               cfg.length, str(cfg.reduction))


def seed_tags(m: measurements.Measurement, index: int) -> measurements.Measurement:
    """A seed's measurement, its logger tags marked as its own."""
    def marked(tags):
        return {c: f"{t}{MARK}{index}" for c, t in tags.items()}
    return dataclasses.replace(m, tags=marked(m.tags), log10_tags=marked(m.log10_tags),
                               peak_tags=marked(m.peak_tags))


def seed_built(group: Group, seed: Seed) -> train.Built:
    """A seed as its own run's record reads it (`train.measured`, `train.draw`)."""
    return train.Built(SeedTrainer(group.trainer, seed.logger), seed.module, seed.data, seed.measured, seed.best)


def run_group(members: list[tuple], sweep_dir=None, on_stop=None) -> list[dict]:
    """The runs of `members` ((config, run dir) of one setting's seeds) trained as one stacked
    model; each seed's record written to its dir as its own run writes it. Returns the records.
    Raises `Unstacked` (nothing kept) where the group gives way. Stopped by a signal: every seed's
    record says so (`train.stop_interrupted`), then `on_stop` is called once with the signal's name,
    and SystemExit is raised with the last seed's line."""
    group = None
    with interrupts.Phases() as phases:
        try:
            group = build(members)
            why = numbers_differ(group)
            if why:
                raise Unstacked(why)
            log.info("seeds %s of one setting trained side by side, as one stacked model",
                     ", ".join(str(s.cfg.seed) for s in group.seeds))
            phases.enter("data")
            group.datamodule.prepare_data()
            phases.enter("fit")
            outcome = train.fit(train.Built(group.trainer, group.module, group.datamodule, [], None), None)
            if outcome["status"] == "diverged":
                raise Unstacked(f"a seed diverged at step {outcome['diverged_step']}")
            if outcome["status"] == "interrupted":
                raise interrupts.Interrupted("fit", phases.signum or signal.SIGINT)
            phases.check()
            phases.enter("test")
            tests = evaluate_best(group)
            phases.enter("figures")
            draw_seeds(group)
            return [finish(group, s, {**outcome, **tests[i]}, phases) for i, s in enumerate(group.seeds)]
        except interrupts.Interrupted as stop:
            each_seed(group, members, lambda cfg, run_dir, built: train.stop_interrupted(
                cfg, built, run_dir, stop, {}, None, sweep_dir), lambda: on_stop and on_stop(stop.signal))
        except Unstacked:
            for _, run_dir in members:  # nothing of the group's attempt is kept
                attempts.start_over(Path(run_dir))
            raise
        except Exception as err:
            if group is None:
                raise
            each_seed(group, members, lambda cfg, run_dir, built: train.stop_failed(
                cfg, built, run_dir, phases.phase, err, {}))


def each_seed(group: Group | None, members: list[tuple], stop, then=None) -> None:
    """`stop(cfg, run_dir, built)`, which writes a seed's record and raises, for every seed (built:
    None before the group was); then `then()`, and raises the last seed's error."""
    last = None
    for i, (cfg, run_dir) in enumerate(members):
        try:
            stop(cfg, Path(run_dir), seed_built(group, group.seeds[i]) if group else None)
        except BaseException as err:  # SystemExit (interrupted) or RunFailed
            last = err
    if then is not None:
        then()
    raise last


def evaluate_best(group: Group) -> list[dict]:
    """Each seed's best-on-dev checkpoint tested: its weights loaded into its slice, one test of
    the stacked model. `dev_best`, `best_checkpoint`, `test_acc` per seed (None without one)."""
    from srn_lightning.resume import load_checkpoint

    found = []
    for s in group.seeds:
        path = s.best.best_model_path
        if path:
            s.module.load_state_dict(load_checkpoint(Path(path), path)["state_dict"])
        found.append(path)
    (test,) = group.trainer.test(group.module, datamodule=group.datamodule, verbose=False)
    return [{"dev_best": float(s.best.best_model_score), "best_checkpoint": Path(path).name,
             "test_acc": test[f"test/acc{MARK}{i}"]} if path else
            {"dev_best": None, "best_checkpoint": None, "test_acc": None}
            for i, (s, path) in enumerate(zip(group.seeds, found))]


def draw_seeds(group: Group) -> None:
    """Every seed's figures (`train.draw`'s, each as PNG and PDF and as an image in its TensorBoard),
    drawn side by side (`drawn_side_by_side`), the images logged here, in order."""
    figures = [(seed, name, draw_one, args) for seed in group.seeds
               for name, draw_one, args in measurements.figures(seed.measured, seed.run_dir, train.title(seed.cfg))]
    calls = [(draw_one, args) for *_, draw_one, args in figures]
    with contextlib.closing(drawn_side_by_side(calls, torch.get_num_threads() + 1)) as drawn:
        for pixels, (seed, name, *_) in zip(drawn, figures):  # each logged as it comes, while others draw
            measurements.log_figure(seed_built(group, seed).trainer, seed.run_dir, name, pixels)


def drawn_side_by_side(calls: list[tuple], processes: int) -> Iterator:
    """What each (drawing function, its arguments) returns, in order, as each is ready, each call
    made in a process forked from this one, at most `processes` at a time (and no more than the
    cores): the figures of a group of 3 seeds on 2 cores in 0.67 s instead of 1.02 s one after the
    other (`python -m benchmarks.figures`). A group draws with its job's share of the cores
    (its torch threads) and one more, a core another job may have left. With one process, or where
    processes are not forked (not Linux), one after the other, here. The functions and arguments
    are pickled (a module-level function, or a partial of one)."""
    processes = min(processes, console.cores(), len(calls))
    if processes < 2 or sys.platform != "linux":
        for draw_one, args in calls:
            yield draw_one(*args)
        return
    plots.preload()  # each process forked with matplotlib loaded
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=drawing_process, initargs=(os.getpid(),))
    try:
        # This process's objects out of the forked processes' garbage collections (see
        # job_process.run_alone); with fork, the pool starts its processes at the first submit.
        frozen = gc.get_freeze_count()
        gc.freeze()
        try:
            futures = [pool.submit(draw_one, *args) for draw_one, args in calls]
        finally:
            if not frozen:  # a job's process keeps what it was frozen with (job_process._child)
                gc.unfreeze()
        for future in futures:
            yield future.result()
    except BaseException:  # a signal (Interrupted), a failed figure, or the caller's own failure
        pool.shutdown(wait=False, cancel_futures=True)  # (GeneratorExit): the record follows at once
        raise
    pool.shutdown()


def drawing_process(parent: int) -> None:
    """A process that draws a group's figures: the signals that stop a run are its parent's to act
    on (which writes the records), and it ends with its parent. SIGTERM keeps its default, so that
    the pool can end a drawing process (and a cluster's SIGTERM to every process of a job ends it)."""
    for signum in interrupts.SIGNALS:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    die_with_parent(parent, signal.SIGKILL)


def finish(group: Group, seed: Seed, known: dict, phases) -> dict:
    """A seed's HParams, record and answer, as `train.finish` writes its run's (its figures drawn
    already, `draw_seeds`)."""
    built = seed_built(group, seed)
    cfg, run_dir = seed.cfg, seed.run_dir
    metrics = train.measured(cfg, built, known)
    if phases.phase != "figures":  # its HParams events are its figures phase's, as in its run
        phases.enter("figures")
    with naming(run_dir / "tb"):
        seed.logger.log_hyperparams(record.hparams(cfg), record.hparam_metrics(metrics))
    phases.enter("record")
    with interrupts.deferred():
        with naming(run_dir / "tb"):
            seed.logger.finalize("success")
        record.write_metrics(run_dir, metrics)
    handler = logging.FileHandler(run_dir / "train.log")  # the seed's answer in its own log too
    logging.getLogger().addHandler(handler)
    try:
        for line in answer.lines(metrics, seed.measured[0].columns(), run_dir):
            log.info(line)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return metrics
