"""`hyperp report SWEEP... --fill FILE [--check]`: the report's tables written into the marked blocks of a
Markdown file. Only the inside of the blocks changes (the prose is kept byte for byte), a second fill changes
nothing, bad markers and unknown ids are one error line that writes nothing, the filled numbers are the
checks' and fits' own, and the shipped results/README.md is what its ledgers give."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hyperp.checks.transfer import check_transfer
from hyperp.cli import app
from hyperp.fitting.compute import compare_methods
from hyperp.report.fill import TABLE_IDS, Slot, fill_text, read_slots
from hyperp.report.parts import slope_text, value_interval
from report_sweeps import OPTIMA, snapshot, tiny_sweep

ROOT = Path(__file__).parents[1]
B = 40  # bootstrap replicates: enough for intervals, quick
STUDIES = ("head_radius", "width_transfer", "depth_transfer", "token_exponent", "compute_efficiency", "moe_granularity")

PROSE = ("# A study\n\nProse with *emphasis*, a | pipe, trailing spaces   \nand unicode: eta* ≈ 0.02 ± 0.001.\n\n"
         "<!-- an ordinary comment stays -->\n\n")


def doc(*blocks: tuple[str, str, str]) -> str:
    """PROSE, then each (study, table id, old content) as a block followed by a line of prose."""
    text = PROSE
    for i, (study, table, old) in enumerate(blocks):
        text += f"<!-- report: {study} {table} -->\n{old}<!-- /report -->\nBetween block {i} and the next.\n\n"
    return text + "The end, no newline after it."


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def fill(*args: str):
    return runner().invoke(app, ["report", *args, "-B", str(B)])


def outside(text: str) -> str:
    """The text with every block emptied (its marker lines kept): what a fill must keep byte for byte."""
    return re.sub(r"(<!-- report: [^\n]*-->\n).*?(?=<!-- /report -->)", r"\1", text, flags=re.S)


def block(text: str, study: str, table: str) -> str:
    return text.split(f"<!-- report: {study} {table} -->\n", 1)[1].split("<!-- /report -->", 1)[0]


def rows(content: str) -> list[list[str]]:
    """The body rows of the Markdown table in a block's content, each cell unescaped."""
    lines = [ln for ln in content.splitlines() if ln.startswith("|")][2:]
    return [[c.strip().replace("\\*", "*").replace("\\|", "|") for c in ln.strip("|").split(" | ")] for ln in lines]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("fill"), "tiny")


BLOCKS = (("tiny", "slopes:width", "a hand-written table\n| a | b |\n"), ("tiny", "transfer:width", ""),
          ("tiny", "lr-optima", "\n\n"), ("tiny", "cel:per-size", "old\n"), ("tiny", "runs", "x\n"))


@pytest.fixture(scope="module")
def filled(sweep, tmp_path_factory):
    """A document of five blocks filled once from the tiny sweep, with its text before and after."""
    path = tmp_path_factory.mktemp("doc") / "README.md"
    before = doc(*BLOCKS)
    path.write_text(before)
    sweep_files = snapshot(sweep)
    res = fill(str(sweep), "--fill", str(path), "--json")
    assert res.exit_code == 0, res.stderr
    assert snapshot(sweep) == sweep_files  # the sweep is only read
    return {"path": path, "before": before, "after": path.read_text(), "json": json.loads(res.stdout)}


def test_fill_replaces_only_inside_the_markers(filled):
    before, after = filled["before"], filled["after"]
    assert outside(after) == outside(before) and outside(before).count("-->\n<!-- /report -->") == len(BLOCKS)
    assert "a hand-written table" not in after and "\nold\n" not in after
    out = filled["json"]["fill"]
    assert out["written"] and out["changed"] == len(BLOCKS)
    assert [(b["study"], b["table"]) for b in out["blocks"]] == [(s, t) for s, t, _ in BLOCKS]
    for study, table, _ in BLOCKS:
        content = block(after, study, table)
        assert content.startswith("\n") and content.endswith("|\n\n") and rows(content)


def test_a_second_fill_changes_nothing_and_check_says_current(filled, sweep):
    path = filled["path"]
    mtime = path.stat().st_mtime_ns
    res = fill(str(sweep), "--fill", str(path))
    assert res.exit_code == 0, res.stderr
    assert path.read_text() == filled["after"] and path.stat().st_mtime_ns == mtime  # not even rewritten
    assert "none changed" in res.stdout
    res = fill(str(sweep), "--fill", str(path), "--check")
    assert res.exit_code == 0 and "all 5 report blocks are current" in res.stdout


def test_check_exits_1_on_a_stale_block_and_writes_nothing(filled, sweep, tmp_path):
    path = tmp_path / "stale.md"
    after = filled["after"]
    content = block(after, "tiny", "lr-optima")
    (first,) = [r for r in rows(content) if r[:2] == ["hyperp", "64"]]
    path.write_text(after.replace(content, content.replace(f"| {first[2]} |", "| 0.0999 [0.09, 0.11] |")))
    before = snapshot(tmp_path)
    res = fill(str(sweep), "--fill", str(path), "--check", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)["fill"]
    assert out["changed"] == 1 and not out["written"]
    assert [b["table"] for b in out["blocks"] if b["changed"]] == ["lr-optima"]
    assert snapshot(tmp_path) == before


def test_the_filled_numbers_are_the_checks_and_fits_own(filled, sweep):
    after = filled["after"]
    runs = pd.read_parquet(sweep / "runs.parquet")
    checks = check_transfer(runs, "width", by=["param"], n_boot=B, seed=0)
    slopes = {r[0]: r for r in rows(block(after, "tiny", "slopes:width"))}
    points = {(r[0], r[1]): r for r in rows(block(after, "tiny", "transfer:width"))}
    assert set(slopes) == set(OPTIMA) and len(points) == 6
    for c in checks:
        param = c.group["param"]
        locals_ = "; ".join(f"{s.low_scale:g} -> {s.high_scale:g}: "
                            f"{slope_text(s.slope, s.interval.low, s.interval.high)}" for s in c.local_slopes)
        assert slopes[param] == [param, slope_text(c.slope, c.slope_interval.low, c.slope_interval.high), locals_,
                                 c.verdict, c.decided_by]
        for p in c.points:
            row = points[(param, f"{p.scale:g}")]
            assert row[2] == value_interval(p.optimum.lr_opt, p.optimum.lr_interval.low, p.optimum.lr_interval.high)
            assert row[4] == f"{p.optimum.loss_opt:.4f}" and row[9] == str(p.optimum.n_points)
            assert row[5] == value_interval(p.regret, p.regret_interval.low, p.regret_interval.high)
            assert p.optimum.lr_opt == pytest.approx(OPTIMA[param], rel=0.1)  # the sweep's truth
    cel = compare_methods(runs, "muon", best_of=["width"], n_boot=B, seed=0)
    table = rows(block(after, "tiny", "cel:per-size"))
    assert [(r[0], r[1], r[4]) for r in table] == [
        (p.method, w, value_interval(p.cel, p.interval.low, p.interval.high))
        for p, w in zip(cel.cel_points, ("32", "64", "128"))]
    counts = runs["status"].value_counts()
    assert rows(block(after, "tiny", "runs")) == [[str(len(runs)), str(counts["completed"]), str(counts["diverged"]),
                                                   str(counts["failed"]), "0", "0", "0"]]


def test_the_filled_tables_are_the_reports_own(sweep, tmp_path):
    """With -o and --fill in one call, each filled table appears as is in the report's Markdown."""
    path = tmp_path / "doc.md"
    path.write_text(doc(*BLOCKS))
    res = fill(str(sweep), "-o", str(tmp_path / "out"), "--format", "md", "--fill", str(path))
    assert res.exit_code == 0, res.stderr
    report, text = (tmp_path / "out" / "report.md").read_text(), path.read_text()
    for study, table, _ in BLOCKS:
        assert block(text, study, table).strip() in report


def test_crlf_files_keep_their_line_endings(sweep, tmp_path):
    path = tmp_path / "crlf.md"
    before = doc(("tiny", "runs", "old\n")).replace("\n", "\r\n")
    path.write_bytes(before.encode())
    assert fill(str(sweep), "--fill", str(path)).exit_code == 0
    after = path.read_bytes().decode()
    assert "\n" not in after.replace("\r\n", "") and after.startswith(PROSE.replace("\n", "\r\n"))
    assert after.endswith("<!-- /report -->\r\nBetween block 0 and the next.\r\n\r\nThe end, no newline after it.")


BAD = {
    "unknown study": (doc(("tiny", "runs", ""), ("nosuch", "runs", "")), "no sweep named 'nosuch'"),
    "unknown table": (doc(("tiny", "runs", ""), ("tiny", "nosuch", "")), "has no table 'nosuch' (its tables: "),
    "head-best where no head std varies": (doc(("tiny", "head-best", "")), "has no table 'head-best'"),
    "never closed": (PROSE + "<!-- report: tiny runs -->\nold\n", "is never closed"),
    "closes nothing": (PROSE + "old\n<!-- /report -->\n", "closes no block"),
    "opens twice": (PROSE + "<!-- report: tiny runs -->\n<!-- report: tiny lr-optima -->\n<!-- /report -->\n",
                    "opens inside the block opened on line 8"),
    "no table id": (PROSE + "<!-- report: tiny -->\n<!-- /report -->\n", "not a report marker"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_markers_or_ids_are_one_error_line_and_write_nothing(sweep, tmp_path, case):
    text, message = BAD[case]
    path = tmp_path / "doc.md"
    path.write_text(text)
    before, sweep_files = snapshot(tmp_path), snapshot(sweep)
    res = fill(str(sweep), "--fill", str(path))
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:") and message in line
    assert snapshot(tmp_path) == before and snapshot(sweep) == sweep_files


@pytest.mark.parametrize("args, message", [([], "give -o DIR"), (["--check"], "give --fill"),
                                           (["--fill", "no_such.md"], "no such file")])
def test_fill_options_are_checked(sweep, tmp_path, args, message):
    res = fill(str(sweep), *[a if a != "no_such.md" else str(tmp_path / a) for a in args])
    assert res.exit_code == 2 and message in res.stderr


def test_check_with_an_output_directory_is_refused_and_writes_nothing(sweep, tmp_path):
    path, out = tmp_path / "doc.md", tmp_path / "report"
    path.write_text(doc(("tiny", "runs", "")))
    before = snapshot(tmp_path)
    res = fill(str(sweep), "--fill", str(path), "--check", "-o", str(out))
    assert res.exit_code == 2 and "--check writes nothing" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and snapshot(tmp_path) == before and not out.exists()


def test_a_file_inside_a_sweep_is_never_filled(tmp_path):
    sweep = tiny_sweep(tmp_path, "tiny")
    (sweep / "notes.md").write_text(doc(("tiny", "runs", "")))
    before = snapshot(sweep)
    res = fill(str(sweep), "--fill", str(sweep / "notes.md"))
    assert res.exit_code == 2 and "never writes into a sweep" in res.stderr and snapshot(sweep) == before


def test_fill_text_keeps_text_without_blocks_and_names_the_ids():
    assert fill_text("no blocks\n", [], {}) == ("no blocks\n", [])
    text, slots = "<!-- report: s t -->\n<!-- /report -->\n", [Slot("s", "t", 1, 2)]
    with pytest.raises(ValueError, match=r"doc.md:1: the report of s has no table 't' \(its tables: none\)"):
        fill_text(text, slots, {"s": {}}, "doc.md")
    assert {i.split(":")[0] for i in TABLE_IDS} >= {"slopes", "transfer", "lr-optima", "cel", "head-best", "runs"}


def test_read_slots_reads_the_markers(tmp_path):
    path = tmp_path / "d.md"
    path.write_text("x\n  <!--  report:  a  b:c=1  -->  \ny\n<!--/report-->\n")
    assert read_slots(path)[1] == [Slot("a", "b:c=1", 2, 4)]


SHIPPED = ROOT / "results" / "sweeps-data"


NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def last_digit(token: str) -> float:
    """The value of one unit in the last printed digit of a decimal number ("0.0123" -> 1e-4, "1.2e+21" ->
    1e20); 0 for an integer without exponent (a count: exact)."""
    mantissa, _, exponent = token.lower().partition("e")
    if "." not in mantissa and not exponent:
        return 0.0
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_differ(committed: str, refilled: str) -> list[str]:
    """Where two texts differ beyond rounding: the text around the numbers must match exactly, and each number
    within one unit of its last printed digit (a value on a rounding edge may print either way after a numpy
    or scipy update; any real change moves it further) or 1e-6 relative."""
    skeleton = [NUMBER.sub("#", t).splitlines() for t in (committed, refilled)]
    if skeleton[0] != skeleton[1]:
        line = next((i for i, (a, b) in enumerate(zip(*skeleton)) if a != b), min(map(len, skeleton)))
        return [f"text differs at line {line + 1}"]
    out = []
    for a, b in zip(NUMBER.findall(committed), NUMBER.findall(refilled)):
        x, y = float(a), float(b)
        if abs(x - y) > max(last_digit(a), last_digit(b)) * (1 + 1e-9) + 1e-6 * max(abs(x), abs(y)):
            out.append(f"{a} -> {b}")
    return out


def test_numbers_differ_allows_rounding_only():
    assert numbers_differ("a 0.123 [0.1, 0.2] n 24\n", "a 0.124 [0.1, 0.2] n 24\n") == []
    assert numbers_differ("a 0.123, 1.2e+21", "a 0.126, 1.3e+21") == ["0.123 -> 0.126"]
    assert numbers_differ("n 24", "n 25") == ["24 -> 25"]
    assert numbers_differ("x 0.1 pass", "x 0.1 fail") == ["text differs at line 1"]


@pytest.mark.skipif(not all((SHIPPED / s / "runs.parquet").is_file() for s in STUDIES),
                    reason="the shipped study ledgers are not in this checkout")
def test_the_shipped_results_readme_is_what_its_ledgers_give(tmp_path):
    """results/README.md's report blocks against results/sweeps-data (about 10 s: no figures are drawn), refilled
    on a copy and compared number by number within rounding (not digit for digit: a numpy or scipy update may
    move a last digit). On a failure, refill it: the command at the top of results/README.md."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "results" / "README.md", readme)  # refilled on a copy: a test writes nothing in the tree
    res = runner().invoke(app, ["report", *(str(SHIPPED / s) for s in STUDIES), "--fill", str(readme), "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)["fill"]
    assert {b["study"] for b in out["blocks"]} == set(STUDIES)
    differ = numbers_differ((ROOT / "results" / "README.md").read_text(), readme.read_text())
    assert not differ, f"stale numbers in results/README.md: {differ[:10]}"
