"""`hyperp data prepare`: a BPE tokenizer and uint16 shards from text, read back by the trainer."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import hyperp.trainer.prepare as prepare_module
from hyperp.cli import app
from hyperp.config import ConfigError, RunConfig
from hyperp.trainer.data import SPLITS, DataError, load_corpus, read_shard, split_files
from hyperp.trainer.loop import train
from hyperp.trainer.prepare import EOT, prepare

tokenizers = pytest.importorskip("tokenizers")

VOCAB = 300
VAL_PERCENT = 30.0
SHARD_TOKENS = 2048  # several train shards from a corpus of ~10k tokens
WORDS = ("the of and model width depth learning rate token shard sphere norm loss step batch "
         "naïve café Straße ∑ λ → 😀 日本語").split()


def corpus_text(rng: random.Random, lines: int) -> str:
    """Lines of random words with the odd tab, CRLF, trailing space and indentation."""
    ends = ["\n", "\n", "\n", "\r\n", " \n", "\t\n"]
    return "".join("    " * rng.randrange(3) + " ".join(rng.choices(WORDS, k=rng.randrange(1, 12))) + rng.choice(ends)
                   for _ in range(lines))


def write_corpus(root: Path) -> Path:
    rng = random.Random(0)
    root.mkdir()
    (root / "sub").mkdir()
    for i in range(8):
        (root / f"doc{i}.txt").write_text(corpus_text(rng, 60), encoding="utf-8", newline="")
    (root / "sub" / "nested.md").write_text("# title\n\n" + corpus_text(rng, 40), encoding="utf-8", newline="")
    (root / "empty.txt").write_text("")
    (root / "no_newline.txt").write_text("last line without a newline", encoding="utf-8")
    return root


def cli(*args: str):
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into output unless told not to
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, ["data", "prepare", *map(str, args)])


def prepare_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [src, "--vocab-size", VOCAB, "--out", out, "--val-percent", VAL_PERCENT, "--shard-tokens", SHARD_TOKENS,
            *extra]


def file_bytes(directory: Path) -> dict[str, bytes]:
    """Every file below `directory` by relative path: its bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = write_corpus(tmp_path_factory.mktemp("corpus") / "src")
    train_files, val_files = split_files(root, sorted(p for p in root.rglob("*") if p.is_file()), VAL_PERCENT)
    assert len(train_files) >= 3 and len(val_files) >= 2  # the corpus exercises both splits
    return root


@pytest.fixture(scope="module")
def prepared(src, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "out"
    result = cli(*prepare_args(src, out, "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def split_tokens(out: Path, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(read_shard(out / name)) for name in json.loads(
        (out / "meta.json").read_text())["shards"][split]])


def documents(tokens: np.ndarray, eot: int) -> list[list[int]]:
    """The token ids between EOTs (each document starts with one)."""
    assert tokens[0] == eot
    cuts = np.flatnonzero(tokens == eot)
    return [tokens[a + 1: b].tolist() for a, b in zip(cuts, [*cuts[1:], len(tokens)])]


def test_every_file_round_trips_through_the_shards_and_saved_tokenizer(src, prepared):
    out, meta = prepared
    tokenizer = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    eot = tokenizer.token_to_id(EOT)
    assert meta["vocab_size"] == tokenizer.get_vocab_size() == VOCAB and meta["eot"]["id"] == eot
    files = dict(zip(("train", "val"), split_files(src, sorted(p for p in src.rglob("*") if p.is_file()),
                                                   VAL_PERCENT)))
    for split, split_files_ in files.items():
        tokens = split_tokens(out, split)
        assert len(tokens) == meta["tokens"][split]
        docs = documents(tokens, eot)
        assert len(docs) == len(split_files_)
        for path, ids in zip(split_files_, docs):
            assert tokenizer.decode(ids, skip_special_tokens=False) == path.read_bytes().decode("utf-8"), path
    assert meta["source_files"] == {"train": len(files["train"]), "val": len(files["val"])}
    assert meta["lossy_files"] == []


def test_shards_hold_at_most_shard_tokens_in_the_speedrun_format(prepared):
    out, meta = prepared
    train_shards = meta["shards"]["train"]
    assert len(train_shards) >= 3 and train_shards[0] == "train_000000.bin"
    sizes = [len(read_shard(out / name)) for name in train_shards]
    assert all(s == SHARD_TOKENS for s in sizes[:-1]) and 0 < sizes[-1] <= SHARD_TOKENS
    header = np.fromfile(out / train_shards[0], dtype=np.int32, count=3)
    assert header.tolist() == [20240520, 1, SHARD_TOKENS]
    assert sorted(p.name for p in out.iterdir()) == sorted(["meta.json", "tokenizer.json", *train_shards,
                                                            *meta["shards"]["val"]])


def test_trainer_reads_the_prepared_directory_and_trains(prepared, tiny):
    out, meta = prepared
    corpus = load_corpus(str(out), 2.0)  # val_percent plays no part: the split is the shards'
    assert np.array_equal(corpus.train, split_tokens(out, "train"))
    assert np.array_equal(corpus.val, split_tokens(out, "val"))
    assert corpus.vocab_size == VOCAB  # meta.json's, even where the shards leave top ids unused
    assert corpus.corpus_id.startswith(f"prepared:{meta['source_sha256'][:16]}:")
    with pytest.raises(ConfigError, match="vocab_size"):
        train(RunConfig(**tiny | dict(data=str(out))))  # 256 < 300
    result = train(RunConfig(**tiny | dict(data=str(out), vocab_size=VOCAB)))
    assert result.status == "completed" and np.isfinite(result.row["val_loss"])


def test_second_run_is_byte_identical_and_drops_stale_shards(src, prepared, tmp_path):
    out, meta = prepared
    fresh = tmp_path / "fresh"
    assert cli(*prepare_args(src, fresh)).exit_code == 0
    assert file_bytes(fresh) == file_bytes(out)
    assert cli(*prepare_args(src, fresh)).exit_code == 0  # over its own output
    assert file_bytes(fresh) == file_bytes(out)
    before = file_bytes(fresh)
    prepare(str(src), fresh, vocab_size=VOCAB, val_percent=VAL_PERCENT, shard_tokens=4 * SHARD_TOKENS)
    after = file_bytes(fresh)
    assert len([n for n in after if n.startswith("train_")]) < len([n for n in before if n.startswith("train_")])
    assert after["tokenizer.json"] == before["tokenizer.json"]
    assert np.array_equal(split_tokens(fresh, "train"), split_tokens(out, "train"))
    corpus = load_corpus(str(fresh), 2.0)
    assert isinstance(corpus.train, np.memmap) and isinstance(corpus.val, np.memmap)  # one shard each: mapped


def test_given_tokenizer_gives_the_trained_runs_shards(src, prepared, tmp_path):
    out, meta = prepared
    again = tmp_path / "again"
    result = cli(src, "--tokenizer", out / "tokenizer.json", "--out", again, "--val-percent", VAL_PERCENT,
                 "--shard-tokens", SHARD_TOKENS, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokenizer_from"] == str(out / "tokenizer.json")
    assert {n: b for n, b in file_bytes(again).items() if n != "meta.json"} == \
           {n: b for n, b in file_bytes(out).items() if n != "meta.json"}


def test_interrupted_run_is_refused_by_the_trainer_and_resumed_by_a_rerun(src, prepared, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def crash(path, tokens):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "write_shard", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), out, vocab_size=VOCAB, val_percent=VAL_PERCENT, shard_tokens=SHARD_TOKENS)
    with pytest.raises(DataError, match="unfinished"):
        load_corpus(str(out), 2.0)
    monkeypatch.undo()
    assert cli(*prepare_args(src, out)).exit_code == 0
    assert file_bytes(out) == file_bytes(prepared[0])


def test_non_utf8_file_is_read_with_replacement_and_listed(tmp_path):
    src = write_corpus(tmp_path / "src")
    (src / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 40)
    out = tmp_path / "out"
    meta = prepare(str(src), out, vocab_size=VOCAB, val_percent=VAL_PERCENT)
    assert meta["lossy_files"] == ["latin1.txt"]
    tokenizer = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = [tokenizer.decode(split_tokens(out, split).tolist(), skip_special_tokens=False) for split in SPLITS]
    replaced = (src / "latin1.txt").read_bytes().decode("utf-8", errors="replace")
    assert "\ufffd" in replaced and sum(t.count(EOT + replaced) for t in texts) == 1


def write_foreign(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("mine")


@pytest.mark.parametrize("case, field", [
    ("missing SRC", "SRC"),
    ("vocab too small", "--vocab-size"),
    ("vocab too large", "--vocab-size"),
    ("no vocab or tokenizer", "--vocab-size"),
    ("foreign --out", "notes.txt"),
    ("--out inside SRC", "--out"),
    ("no validation file", "--val-percent"),
    ("unreadable tokenizer", "--tokenizer"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(src, tmp_path, case, field):
    out = tmp_path / "out"
    args = {
        "missing SRC": prepare_args(tmp_path / "nope", out),
        "vocab too small": [src, "--vocab-size", "256", "--out", out],
        "vocab too large": [src, "--vocab-size", "65537", "--out", out],
        "no vocab or tokenizer": [src, "--out", out],
        "foreign --out": prepare_args(src, out),
        "--out inside SRC": prepare_args(src, src / "out"),
        "no validation file": [src, "--vocab-size", VOCAB, "--out", out, "--val-percent", "0.01"],
        "unreadable tokenizer": [src, "--tokenizer", src / "doc0.txt", "--out", out, "--val-percent", VAL_PERCENT],
    }[case]
    if case == "foreign --out":
        write_foreign(out)
    src_before = file_bytes(src)
    result = cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], lines
    assert (file_bytes(out) == {"notes.txt": b"mine"}) if case == "foreign --out" else not out.exists()
    assert file_bytes(src) == src_before and not (src / "out").exists()
