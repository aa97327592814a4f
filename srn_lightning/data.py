"""The book's digit-sum data: generator, files, Dataset and loaders, with torch and numpy, no
Lightning (the LightningDataModule that serves them to a run is srn_lightning/datamodule.py).

Each example is a sequence of `length` digits whose label is the sum of the first two (0..18); every
later position is noise the model has to learn to ignore. The generator reproduces nndl ch. 6.2 byte
for byte: ONE legacy numpy stream seeded with 0, consumed for the lengths 5, 10, ..., 35 in that order,
train (k=3), dev (k=1), test (k=1) for each. A length outside that list gets the same procedure on
its own stream seeded with 0, as if the book had been run with that single length.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from srn_lightning.config import MAX_LENGTH, MIN_LENGTH
from srn_lightning.errors import UserError
from srn_lightning.files import write_atomic

BOOK_LENGTHS = (5, 10, 15, 20, 25, 30, 35)
BOOK_SEED = 0
SPLITS = ("train", "dev", "test")
COPIES = {"train": 3, "dev": 1, "test": 1}  # noisy copies of each of the 100 base pairs
NUM_CLASSES = 19  # labels 0..18


EVAL_POSITIONS = 4000  # examples x positions in an evaluation batch: the whole of dev up to length 40


def split_size(split: str) -> int:
    """The examples of `split`: the 100 base pairs, each in its k noisy copies."""
    return 100 * COPIES[split]


def split_batch_size(split: str, batch_size: int, length: int) -> int:
    """The batch size of `split`'s loader: training's `batch_size`. Dev and test take up to
    EVAL_POSITIONS positions a batch, never fewer examples than training: at the book's lengths
    (up to 35) their 100 examples are one batch, so validation's machinery runs once an epoch, not
    once a training batch (at the memory experiment's batch 8, 13 times: 0.19 s of its fit,
    benchmarks/README.md); at
    long lengths evaluation holds no more at once than training."""
    if split == "train":
        return batch_size
    return min(split_size(split), max(batch_size, EVAL_POSITIONS // length))


def batches(split: str, batch_size: int, length: int, limit=1.0) -> int:
    """The batches an epoch of `split` has at the run's `batch_size` and `length`, under a Trainer
    `limit_<split>_batches` (a count, or a share of them rounded down, as Lightning takes it)."""
    n = -(-split_size(split) // split_batch_size(split, batch_size, length))  # the last batch partial
    return min(n, limit) if isinstance(limit, int) and not isinstance(limit, bool) else int(n * limit)


class DataFileError(UserError, ValueError):
    """A data file that cannot be trusted; the message names the file (and line)."""


def _make_split(rng: np.random.RandomState, length: int, k: int) -> list[tuple[list[int], int]]:
    examples = []
    for n1 in range(10):
        for n2 in range(10):
            base = [n1, n2] + [0] * (length - 2)
            for _ in range(k):
                idx = rng.randint(2, length)  # order of the two draws is the book's
                val = rng.randint(0, 10)
                seq = list(base)
                seq[idx] = val
                examples.append((seq, n1 + n2))
    return examples


def generate(lengths=BOOK_LENGTHS, seed: int = BOOK_SEED) -> dict[int, dict[str, list]]:
    """Run the book's procedure over `lengths` on one stream: {length: {split: [(seq, label)]}}."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed) + np.random.randint
    out = {}
    for length in lengths:
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise ValueError(f"every length must be an integer in {MIN_LENGTH}..{MAX_LENGTH} (two digits "
                             f"plus noise), got {length}")
        out[length] = {split: _make_split(rng, length, COPIES[split]) for split in SPLITS}
    return out


def examples_for_length(length: int) -> dict[str, list]:
    """The examples the book's procedure gives `length`: drawn from the book's stream if it is a
    book length, else from a stream of its own."""
    if length in BOOK_LENGTHS:
        return generate(BOOK_LENGTHS[: BOOK_LENGTHS.index(length) + 1])[length]
    return generate((length,))[length]


def format_examples(examples) -> str:
    return "".join(" ".join(map(str, seq)) + "\t" + str(label) + "\n" for seq, label in examples)


def split_path(data_dir, length: int, split: str) -> Path:
    return Path(data_dir) / str(length) / f"{split}.txt"


def ensure_files(data_dir, length: int, regenerate: bool = False) -> None:
    """Write `data_dir/<length>/{train,dev,test}.txt` if missing (or if `regenerate`), and refuse a file
    that exists but is not what the book's procedure gives."""
    expected = {s: format_examples(e) for s, e in examples_for_length(length).items()}
    for split, text in expected.items():
        path = split_path(data_dir, length, split)
        if path.is_dir():
            raise DataFileError(f"{path}: a directory, not a data file; remove it, and the run writes the file")
        try:
            if regenerate or not path.exists():
                write_atomic(path, text)
                continue
            current = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataFileError(f"{path}: cannot be read or written ({getattr(err, 'strerror', None) or err})") from None
        if current != text:
            # parse first: a malformed file gets the error that names its line
            read_split(path, length)
            raise DataFileError(
                f"{path}: differs from the book's generator for length {length}; "
                "rerun with data.regenerate=true to rewrite it"
            )


def read_split(path, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse one split file into (sequences [N, length] int64, labels [N] int64), checking every line."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: {'a directory, not a data file' if path.is_dir() else 'missing'}")
    seqs, labels = [], []
    with path.open(errors="replace") as f:  # a byte that is not text: reported as a bad token
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.endswith("\n"):
                raise DataFileError(f"{where}: truncated (no end of line)")
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise DataFileError(f"{where}: expected 'digits<TAB>label', got {quoted(line.rstrip())}")
            tokens, label = parts[0].split(" "), parts[1]
            bad = next((t for t in tokens if t not in _DIGITS), None)
            if bad is not None:
                raise DataFileError(f"{where}: token {quoted(bad)} is not a digit 0-9")
            if length is not None and len(tokens) != length:
                raise DataFileError(f"{where}: {len(tokens)} digits, expected {length}")
            if label not in _LABELS:
                raise DataFileError(f"{where}: label {quoted(label)} is outside 0..{NUM_CLASSES - 1}")
            seqs.append([int(t) for t in tokens])
            labels.append(int(label))
    if not seqs:
        raise DataFileError(f"{path}: empty split")
    if length is None and len({len(s) for s in seqs}) > 1:
        raise DataFileError(f"{path}: lines of different lengths")
    return torch.tensor(seqs, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


_DIGITS = frozenset("0123456789")
_LABELS = frozenset(map(str, range(NUM_CLASSES)))  # as the book writes them: "0".."18"
QUOTE_CHARS = 40  # of a bad line or token in an error: enough to find it, never a line of megabytes


def quoted(text: str) -> str:
    """`text` as an error quotes it: repr'd, and its start only when it is long."""
    if len(text) <= QUOTE_CHARS:
        return repr(text)
    return f"{text[:QUOTE_CHARS]!r}... ({len(text)} characters)"


def dataset(data_dir, length: int, split: str) -> TensorDataset:
    """`split` of `data_dir/<length>/` as a TensorDataset of (sequences, labels), every line checked."""
    return TensorDataset(*read_split(split_path(data_dir, length, split), length))


def loader(examples: TensorDataset, split: str, batch_size: int, length: int,
           shuffle_generator: torch.Generator | None = None, num_workers: int = 0) -> DataLoader:
    """The loader of `split`'s `examples` at the run's `batch_size` and `length` (split_batch_size):
    training's shuffled by `shuffle_generator`, dev and test in file order."""
    return DataLoader(
        examples,
        batch_size=split_batch_size(split, batch_size, length),
        shuffle=shuffle_generator is not None,
        generator=shuffle_generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m srn_lightning.data",
        description="Write the book's digit-sum files DIR/<length>/{train,dev,test}.txt.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(BOOK_LENGTHS),
                        help=f"sequence lengths ({MIN_LENGTH}..{MAX_LENGTH})")
    args = parser.parse_args(argv)
    try:
        if not args.out.strip():
            raise UserError("--out: a directory path, not an empty one")
        bad = [n for n in args.lengths if not MIN_LENGTH <= n <= MAX_LENGTH]
        if bad:
            raise UserError(f"--lengths: every length must be an integer in {MIN_LENGTH}..{MAX_LENGTH}, "
                            f"got {bad[0]}")
        for length in args.lengths:
            ensure_files(args.out, length, regenerate=True)
            for split in SPLITS:
                path = split_path(args.out, length, split)
                print(f"{path}  sha256 {sha256(path)}")
    except UserError as err:  # one line, no usage text and no traceback
        parser.exit(2, f"{parser.prog}: error: {err}\n")

if __name__ == "__main__":
    main()
