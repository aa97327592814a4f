"""LightningModule: the sequence classifier with the book's loss, optimizers, metrics and clipping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from srn_lightning.clipping import LIGHTNING_ALGORITHMS, clip_gradients_
from srn_lightning.model import SeqClassifier


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class SRNClassifier(LightningModule):
    """Digit-sum classification with a recurrent cell: the book's SRN (`cell="srn"`), its LSTM, or a
    GRU; optimized by SGD (the book's 6.2) or Adam (its 6.1 and 6.3).

    `reduction="sum"` is the book's choice for 6.2: it makes gradients batch-size times larger, which
    is what drives the explosion. Clipping `norm` and `value` is Lightning's own (Trainer's
    `gradient_clip_val`); `norm_each` is done here, in `configure_gradient_clipping`
    (srn_lightning/clipping.py has all four).
    """

    def __init__(
        self,
        input_size: int = 32,
        hidden_size: int = 32,
        lr: float = 0.2,
        weight_decay: float = 0.0,
        reduction: str = "sum",
        clip_mode: str = "none",
        clip_val: float | None = None,
        num_classes: int = 19,
        cell: str = "srn",
        optimizer: str = "sgd",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SeqClassifier(10, input_size, hidden_size, num_classes, cell)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # mean per example; "disable": a diverged run's NaN loss is reported as NaN, not dropped
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets `_current_fx_name` (a hook's name, or None) before and after every hook it
        # calls, about 50 times an optimizer step; nn.Module.__setattr__ checks each value against
        # the parameters, buffers and submodules first, which no str or None can be. Set directly:
        # 0.07-0.11 s of the memory experiment's fit (benchmarks/README.md).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def tracked_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The parameters whose gradient norms the run records, by the names of the book's figure."""
        rnn = self.model.rnn_model
        return {"W": rnn.W, "U": rnn.U, "b": rnn.b}

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        return self.model(digits)

    def training_step(self, batch, batch_idx):
        x, y = batch
        # The step's loss goes to the logs through GradNormMonitor, with the step's grad norms.
        return F.cross_entropy(self(x), y, reduction=self.hparams.reduction)

    # Eval metrics accumulate in torchmetrics and go through self.log once an epoch: self.log per
    # batch costs Lightning about a millisecond a key, as much as the SRN's whole eval batch.
    def _eval_step(self, batch, acc: MulticlassAccuracy, loss: MeanMetric) -> None:
        x, y = batch
        logits = self(x)
        acc.update(logits, y)
        loss.update(F.cross_entropy(logits, y, reduction="none"))

    def _log_eval_epoch(self, acc: MulticlassAccuracy, loss: MeanMetric, prefix: str) -> None:
        self.log_dict({f"{prefix}/loss": loss.compute(), f"{prefix}/acc": acc.compute()})
        acc.reset()
        loss.reset()

    def validation_step(self, batch, batch_idx) -> None:
        self._eval_step(batch, self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch(self.val_acc, self.val_loss, "val")

    def test_step(self, batch, batch_idx) -> None:
        self._eval_step(batch, self.test_acc, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch(self.test_acc, self.test_loss, "test")

    def configure_optimizers(self):
        return OPTIMIZERS[self.hparams.optimizer](
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if self.hparams.clip_mode in LIGHTNING_ALGORITHMS:  # from the Trainer's gradient_clip_*
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            clip_gradients_(self.parameters(), self.hparams.clip_mode, self.hparams.clip_val)


def module_from_config(cfg) -> SRNClassifier:
    """The LightningModule of a run's config (the composed Hydra config, or any object with its
    attributes)."""
    return SRNClassifier(
        input_size=cfg.model.input_size, hidden_size=cfg.model.hidden_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, reduction=str(cfg.reduction), clip_mode=str(cfg.clip.mode),
        clip_val=cfg.clip.val, cell=str(cfg.model.cell), optimizer=str(cfg.optimizer.name),
    )
