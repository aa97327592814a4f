"""The LightningDataModule that serves the book's digit-sum data (srn_lightning/data.py) to a run."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from srn_lightning.data import SPLITS, dataset, ensure_files, loader


class DigitSumDataModule(LightningDataModule):
    """Serves `data_dir/<length>/` as train (shuffled, seeded), dev (validation) and test."""

    def __init__(
        self,
        data_dir: str,
        length: int = 20,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        regenerate: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir, self.length, self.batch_size = data_dir, length, batch_size
        self.seed, self.num_workers, self.regenerate = seed, num_workers, regenerate
        self.splits: dict[str, TensorDataset] = {}
        self.prepared = False  # the files are checked (or written) once per run, not per fit and test
        # One generator for the whole fit, its state saved in checkpoints: a resumed run draws the
        # same batch order for its remaining epochs as an uninterrupted one.
        self.shuffle_generator = torch.Generator().manual_seed(seed)

    def prepare_data(self) -> None:
        if not self.prepared:
            ensure_files(self.data_dir, self.length, self.regenerate)
            self.prepared = True

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.splits:
                self.splits[split] = dataset(self.data_dir, self.length, split)

    def _loader(self, split: str, shuffle_generator: torch.Generator | None = None) -> DataLoader:
        return loader(self.splits[split], split, self.batch_size, self.length, shuffle_generator,
                      self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle_generator)

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict:
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.shuffle_generator.set_state(state["shuffle_generator"])
