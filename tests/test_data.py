"""Corpora, shards and batches."""

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from hyperp.config import RunConfig
from hyperp.trainer.data import (SHARD_HEADER_INTS, SHARD_MAGIC, DataError, is_val_file, load_corpus,
                                 stdlib_files, train_batch, val_batches)
from hyperp.trainer.loop import train


def test_stdlib_corpus_is_the_stdlib_sources_in_sorted_order():
    root, files = stdlib_files()
    assert root == Path(sysconfig.get_path("stdlib"))
    assert files == sorted(files) and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)
    corpus = load_corpus("stdlib", 2.0)
    train_files = [f for f in files if not is_val_file(f.relative_to(root).as_posix(), 2.0)]
    val_files = [f for f in files if is_val_file(f.relative_to(root).as_posix(), 2.0)]
    assert len(corpus.train) == sum(f.stat().st_size for f in train_files)
    assert len(corpus.val) == sum(f.stat().st_size for f in val_files)
    assert 0.005 < len(val_files) / len(files) < 0.05
    assert corpus.train[: 64].tobytes() == train_files[0].read_bytes()[:64]
    assert corpus.vocab_size == 256 and corpus.train.dtype == np.uint8


def test_batches_are_a_function_of_seed_and_step():
    corpus = load_corpus("stdlib", 2.0)
    a = train_batch(corpus, 5, 4, 32, seed=1)
    b = train_batch(corpus, 5, 4, 32, seed=1)
    c = train_batch(corpus, 6, 4, 32, seed=1)
    assert (a[0] == b[0]).all() and not (a[0] == c[0]).all()
    x, y = a
    assert (x[:, 1:] == y[:, :-1]).all()  # targets are inputs shifted by one


def test_validation_batches_are_fixed():
    corpus = load_corpus("stdlib", 2.0)
    v1 = val_batches(corpus, 4096, 64, 16)
    v2 = val_batches(corpus, 4096, 64, 8)
    assert sum(x.shape[0] for x, _ in v1) == 64
    assert (np.concatenate([x.numpy() for x, _ in v1]) == np.concatenate([x.numpy() for x, _ in v2])).all()


def test_text_directory(tmp_path):
    for i in range(60):
        (tmp_path / f"f{i:02d}.txt").write_text(f"file {i} " * 50)
    corpus = load_corpus(str(tmp_path), 10.0)
    assert len(corpus.train) + len(corpus.val) == sum(len(f"file {i} " * 50) for i in range(60))
    assert len(corpus.val) > 0


def write_shard(path: Path, tokens: np.ndarray, header: bool) -> None:
    with open(path, "wb") as f:
        if header:
            h = np.zeros(SHARD_HEADER_INTS, dtype=np.int32)
            h[0], h[1], h[2] = SHARD_MAGIC, 1, len(tokens)
            f.write(h.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


@pytest.mark.parametrize("header", [True, False])
def test_bin_shards(tmp_path, header):
    rng = np.random.default_rng(0)
    toks = [rng.integers(0, 1000, 5000) for _ in range(3)]
    for i, t in enumerate(toks):
        write_shard(tmp_path / f"shard_{i}.bin", t, header)
    corpus = load_corpus(str(tmp_path / "shard_*.bin"), 2.0)
    assert (np.asarray(corpus.train) == np.concatenate(toks[:2])).all()
    assert (np.asarray(corpus.val) == toks[2]).all()
    assert corpus.vocab_size == int(max(t.max() for t in toks)) + 1


def test_shard_run_and_vocab_check(tmp_path, tiny):
    write_shard(tmp_path / "one.bin", np.random.default_rng(0).integers(0, 300, 50_000), header=True)
    with pytest.raises(Exception, match="vocab_size"):
        train(RunConfig(**tiny | dict(data=str(tmp_path / "one.bin"))))
    result = train(RunConfig(**tiny | dict(data=str(tmp_path / "one.bin"), vocab_size=300)))
    assert result.status == "completed"


def test_truncated_shard_is_named(tmp_path):
    path = tmp_path / "bad.bin"
    write_shard(path, np.arange(100), header=True)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match="bad.bin"):
        load_corpus(str(path), 2.0)


def test_missing_shard_glob(tmp_path):
    with pytest.raises(DataError, match="no shard"):
        load_corpus(str(tmp_path / "*.bin"), 2.0)


def test_stdlib_listing_prunes_excluded_trees_and_keeps_every_other_py_file():
    """The fast walk lists exactly what a full rglob filtered by EXCLUDED_DIRS lists (the corpus, and so every
    stdlib run's data, is unchanged)."""
    from hyperp.trainer.data import EXCLUDED_DIRS, stdlib_files

    root, files = stdlib_files()
    reference = sorted(p for p in root.rglob("*.py")
                       if p.is_file() and not EXCLUDED_DIRS & set(p.relative_to(root).parts))
    assert files == reference and len(files) > 100
