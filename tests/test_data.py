import hashlib

import numpy as np
import pytest
import torch

from srn_lightning import data
from srn_lightning.datamodule import DigitSumDataModule

# sha256 of the files the book's own procedure writes (its generator, run once as the book does)
BOOK_SHA256 = {
    (20, "train"): "60acd43edbd569d2befba492b9be3c4fc7487b631c1492f8f456dfc162fdde40",
    (20, "test"): "93da6b804adce3a7c8b33674cde53b59f2e33eb1d9a11b6a80408a0d1ac6f90f",
    (10, "dev"): "d8c410b4f8e3ea0bb0a9920c9b403a21299d140c040911921b0b87f73e37fbb1",
}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_writes_the_books_files(tmp_path, capsys):
    data.main(["--out", str(tmp_path)])
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == [5, 10, 15, 20, 25, 30, 35]
    for (length, split), digest in BOOK_SHA256.items():
        assert sha(tmp_path / str(length) / f"{split}.txt") == digest
    assert BOOK_SHA256[(20, "train")] in capsys.readouterr().out


def test_a_single_book_length_is_drawn_from_the_books_stream(tmp_path):
    # length 20 alone must still consume 5, 10 and 15 first, as the book's loop does
    data.ensure_files(tmp_path, 20)
    assert sha(tmp_path / "20" / "train.txt") == BOOK_SHA256[(20, "train")]
    assert sha(tmp_path / "20" / "test.txt") == BOOK_SHA256[(20, "test")]
    data.main(["--out", str(tmp_path / "ten"), "--lengths", "10"])
    assert sha(tmp_path / "ten" / "10" / "dev.txt") == BOOK_SHA256[(10, "dev")]


@pytest.mark.parametrize("length", [5, 12, 50])
def test_every_split_follows_the_books_procedure(tmp_path, length):
    data.ensure_files(tmp_path, length)
    for split, k in (("train", 3), ("dev", 1), ("test", 1)):
        lines = (tmp_path / str(length) / f"{split}.txt").read_text().splitlines()
        assert len(lines) == 100 * k
        for i, line in enumerate(lines):
            digits, label = line.split("\t")
            seq = [int(t) for t in digits.split(" ")]
            assert len(seq) == length
            n1, n2 = divmod(i // k, 10)  # base pairs in order, the k copies next to each other
            assert seq[:2] == [n1, n2] and int(label) == n1 + n2
            assert sum(v != 0 for v in seq[2:]) <= 1  # one noise digit at most


def test_a_length_outside_the_book_uses_its_own_seeded_stream(tmp_path):
    # documented rule: the book's procedure over that single length, stream seeded with 0
    rng = np.random.RandomState(0)
    expected = []
    for n1 in range(10):
        for n2 in range(10):
            for _ in range(3):
                seq = [n1, n2] + [0] * 10
                idx = rng.randint(2, 12)
                seq[idx] = rng.randint(0, 10)
                expected.append(" ".join(map(str, seq)) + f"\t{n1 + n2}\n")
    data.ensure_files(tmp_path, 12)
    assert (tmp_path / "12" / "train.txt").read_text() == "".join(expected)


def test_files_are_written_once_and_reused(tmp_path):
    data.ensure_files(tmp_path, 10)
    path = tmp_path / "10" / "train.txt"
    before = path.stat().st_mtime_ns
    data.ensure_files(tmp_path, 10)
    assert path.stat().st_mtime_ns == before


def test_datamodule_serves_the_files(data_dir):
    dm = DigitSumDataModule(str(data_dir), length=20, batch_size=64, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))  # dev in one batch, whatever the training batch size
    assert x.shape == (100, 20) and x.dtype == torch.long and len(dm.val_dataloader()) == 1
    first = (data_dir / "20" / "dev.txt").read_text().splitlines()[0].split("\t")
    assert x[0].tolist() == [int(t) for t in first[0].split()] and y[0].item() == int(first[1])
    assert len(dm.train_dataloader().dataset) == 300
    assert len(dm.test_dataloader().dataset) == 100 and len(dm.test_dataloader()) == 1
    assert len(dm.train_dataloader()) == 5  # training at batch_size: 300 examples, the last batch 44


@pytest.mark.parametrize("length,batch_size,expected", [
    (20, 64, 100), (35, 8, 100), (40, 8, 100),  # the book's lengths: dev and test in one batch
    (50, 8, 80), (400, 8, 10),  # 4,000 positions a batch
    (400, 64, 64), (1000, 8, 8),  # never fewer examples than a training batch
])
def test_dev_and_test_batches_hold_up_to_4000_positions_and_no_fewer_examples_than_training(
        length, batch_size, expected):
    assert data.split_batch_size("dev", batch_size, length) == expected
    assert data.split_batch_size("test", batch_size, length) == expected
    assert data.split_batch_size("train", batch_size, length) == batch_size


def _order(data_dir, seed):
    dm = DigitSumDataModule(str(data_dir), length=20, batch_size=300, seed=seed)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    return x


def test_train_shuffle_is_seeded(data_dir):
    assert torch.equal(_order(data_dir, 0), _order(data_dir, 0))
    assert not torch.equal(_order(data_dir, 0), _order(data_dir, 1))
    # a shuffle, not a reordering of nothing: same examples, other order
    assert sorted(map(tuple, _order(data_dir, 0).tolist())) == sorted(
        map(tuple, _order(data_dir, 1).tolist())
    )


def _generate_again_and_again(data_dir, barrier, rounds: int) -> None:
    barrier.wait()  # every process starts at once: all of them find the files missing
    for i in range(rounds):
        # rewrite, then check what is there: a partial or interleaved file fails the check
        data.ensure_files(data_dir, 20, regenerate=i % 2 == 1)


def test_processes_generating_the_same_files_at_once_do_not_corrupt_them(tmp_path):
    # parallel sweep jobs (joblib, submitit) may all find data/<length>/ missing and write it at once
    ctx = __import__("multiprocessing").get_context("fork")  # cheap: no re-import of torch
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_generate_again_and_again, args=(tmp_path, barrier, 30)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sha(tmp_path / "20" / "train.txt") == BOOK_SHA256[(20, "train")]
    assert sha(tmp_path / "20" / "test.txt") == BOOK_SHA256[(20, "test")]
    assert sorted(p.name for p in (tmp_path / "20").iterdir()) == ["dev.txt", "test.txt", "train.txt"]


@pytest.mark.parametrize("argv,message", [
    (["--out", "", "--lengths", "5"], "--out: a directory path, not an empty one"),
    (["--out", "{tmp}/x", "--lengths", "10000000000"], "--lengths: every length must be an integer in 3..100000"),
    (["--out", "{tmp}/x", "--lengths", "2"], "--lengths: every length must be an integer in 3..100000"),
    (["--out", "{tmp}/file", "--lengths", "5"], "file/5/train.txt: cannot be read or written (Not a directory)"),
])
def test_the_data_cli_refuses_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "file").write_text("not a dir")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        data.main([a.format(tmp=tmp_path) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m srn_lightning.data: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written, the file untouched
    assert (tmp_path / "file").read_text() == "not a dir"


_KILLED_WRITER = """
import sys, time
from srn_lightning.files import open_atomic
with open_atomic(sys.argv[1]) as f:
    f.write("x" * 4_000_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_mid_write_leaves_no_temp_file(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "train.txt"
    target.write_text("old\n")
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "writing\n"  # 4 MB written, not yet landed
        child.send_signal(signal.SIGKILL)  # what the OOM killer sends: no handler, no clean-up
    finally:
        child.wait(30)
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]
    assert target.read_text() == "old\n"
