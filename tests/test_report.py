"""`hyperp report`: a study report from sweep ledgers, read off the files it writes. The numbers are the
checks' and fits' own (and the synthetic sweep's truth: every optimum at its scheme's LR), the HTML is one
self-contained page, the Markdown twin links PNG files beside it, what a ledger does not support is named
with its reason, and the sweep directories are never written (a running sweep's lock included)."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperp.checks.head import check_head
from hyperp.checks.transfer import check_transfer
from hyperp.cli import app
from hyperp.report.build import build_report
from hyperp.report.doc import Figure, png_size
from hyperp.report.parts import Options, slope_text, value_interval
from report_sweeps import CHINCHILLA, ERROR, OPTIMA, chinchilla_grid, snapshot, tiny_sweep

ROOT = Path(__file__).parents[1]
B = 40  # bootstrap replicates: enough for intervals, quick


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


class Page(html.parser.HTMLParser):
    """Tags and attributes of a page, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def decode_png(uri: str) -> Image.Image:
    import base64
    import io

    assert uri.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()  # decodes every pixel: a truncated or corrupt PNG raises
    return img


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny width sweep (2 planned runs not yet recorded) and its report in both formats, via the CLI."""
    root = tmp_path_factory.mktemp("report")
    sweep = tiny_sweep(root, pending=2)
    before = snapshot(sweep)
    out = {}
    for fmt in ("html", "md"):
        res = runner().invoke(app, ["report", str(sweep), "-o", str(root / fmt), "--format", fmt, "-B", str(B),
                                    "--json"])
        assert res.exit_code == 0, res.stderr
        out[fmt] = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    return {"root": root, "sweep": sweep, "before": before, **out}


def report_text(built) -> str:
    return (built["root"] / "md" / "report.md").read_text()


def test_html_is_one_self_contained_page_whose_figures_decode(built):
    (path,) = built["html"]["files"]
    text = Path(path).read_text()
    page = Page(text)
    assert page.all("script") == [] and page.all("link") == [] and page.all("iframe") == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)  # nothing fetched
    imgs = page.all("img")
    assert len(imgs) == built["html"]["sweeps"][0]["figures"] == 7
    for a in imgs:
        img = decode_png(a["src"])
        assert img.format == "PNG" and (img.width, img.height) == (int(a["width"]), int(a["height"]))
        assert a["alt"]
    assert len(page.all("table")) >= 10 and len(page.all("th")) >= 40
    assert page.all("style") and "<h2" in text and "<figcaption>" in text


def test_markdown_twin_links_the_same_figures_as_png_files_beside_it(built):
    md = report_text(built)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == built["md"]["sweeps"][0]["figures"] == 7
    out = built["root"] / "md"
    assert sorted(Path(f).name for f in built["md"]["files"]) == sorted(["report.md", *links])
    for link in links:
        assert "/" not in link and (out / link).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "data:" not in md and md.count("\n|---|") >= 10


def test_the_numbers_are_the_checks_own_and_the_sweeps_truth(built):
    md = report_text(built)
    runs = pd.read_parquet(built["sweep"] / "runs.parquet")
    checks = check_transfer(runs, "width", by=["param"], n_boot=B, seed=0)
    for c in checks:
        assert f"**param={c.group['param']}: {c.verdict}.**" in md
        assert slope_text(c.slope, c.slope_interval.low, c.slope_interval.high) in md
        for p in c.points:  # every width's optimum sits at its scheme's LR, as the sweep was made
            assert p.optimum.lr_opt == pytest.approx(OPTIMA[c.group["param"]], rel=0.1)
            assert value_interval(p.optimum.lr_opt, p.optimum.lr_interval.low, p.optimum.lr_interval.high) in md
    assert [v["verdict"] for v in built["md"]["sweeps"][0]["verdicts"][:2]] == [c.verdict for c in checks]


def test_statuses_count_the_ledger_and_name_each_failed_runs_first_error_line(built):
    md = report_text(built)
    runs = pd.read_parquet(built["sweep"] / "runs.parquet")
    counts = runs["status"].value_counts()
    row = f"| {len(runs)} | {counts['completed']} | {counts['diverged']} | {counts['failed']} | 0 | 2 | 0 |"
    assert row in md  # ledger, completed, diverged, failed, infra_failed, planned not yet recorded, running
    (failed,) = runs.loc[runs["status"] == "failed", "run_id"]
    line = next(ln for ln in md.splitlines() if failed in ln)
    assert ERROR.splitlines()[0] in line and "File" not in line


def test_skipped_items_say_why(built):
    skipped = {s["what"]: s["why"] for s in built["md"]["sweeps"][0]["skipped"]}
    assert set(skipped) == {"head check", "coord check", "sphere check", "Chinchilla fit"}
    assert "head_init_std does not vary" in skipped["head check"]
    assert skipped["Chinchilla fit"] == "L(N, D) needs both N and D to vary; tokens has one value among the " \
                                        "completed runs"
    md = report_text(built)
    for what, why in skipped.items():
        assert f"| {what} | skipped | {why.replace('*', chr(92) + '*')} |" in md
    assert set(built["md"]["sweeps"][0]["reported"]) == {"LR optima", "transfer along width", "stability",
                                                         "compute fits", "training curves"}


def test_the_sweep_directory_is_never_written(built):
    assert snapshot(built["sweep"]) == built["before"]


def test_a_running_sweep_is_reported_as_it_stands_without_touching_its_lock(tmp_path):
    from hyperp.sweeps.ledger import SweepLock

    sweep = tiny_sweep(tmp_path, pending=3)
    runs = pd.read_parquet(sweep / "runs.parquet")
    partial = (runs["param"] == "muon") & (runs["width"] == 128) & (runs["lr"] > 0.02)  # 2 LRs run so far
    runs[~partial].to_parquet(sweep / "runs.parquet")
    lock = SweepLock(sweep)
    assert lock.acquire()  # a driver holds the sweep
    try:
        before = snapshot(sweep)
        report = build_report([sweep], Options(n_boot=B))
        assert snapshot(sweep) == before
    finally:
        lock.release()
    (sw,) = report.sweeps
    skipped = dict(sw.part.skipped)
    assert skipped["transfer along width: param=muon, width=128"].startswith("fewer than 3 learning rates")
    assert [v["group"] for v in sw.part.verdicts if v["check"] == "transfer along width"] == ["param=hyperp",
                                                                                               "param=muon"]


def applicability(report) -> tuple[set, dict]:
    (sw,) = report.sweeps
    return set(sw.part.reported), dict(sw.part.skipped)


def test_a_token_budget_axis_gets_transfer_and_stability_across_budgets(tmp_path):
    sweep = tiny_sweep(tmp_path, "tok", "tokens", (65536, 131072, 262144))
    reported, skipped = applicability(build_report([sweep], Options(n_boot=B)))
    assert {"transfer along tokens", "stability"} <= reported
    assert "the cells also vary tokens" in skipped["compute fits"]


def test_check_stability_across_token_budgets(tmp_path):
    """The runs' budget joins the curves as tokens_run (beside each step's tokens): `check stability` across it
    found no runs' tokens_run column before."""
    sweep = tiny_sweep(tmp_path, "tok", "tokens", (65536, 131072, 262144))
    res = runner().invoke(app, ["check", "stability", str(sweep), "--scale", "tokens_run", "--by", "param", "--json"])
    assert res.exit_code == 0, res.stderr
    assert [r["scale"] for r in json.loads(res.stdout)] == ["tokens_run", "tokens_run"]


def test_a_head_std_axis_gets_the_head_check_and_no_transfer(tmp_path):
    sweep = tiny_sweep(tmp_path, "head", "head_init_std", (0.02, 0.3, 1.0))
    report = build_report([sweep], Options(n_boot=B))
    reported, skipped = applicability(report)
    assert "head check" in reported and "no transfer axis" in skipped["transfer check"]
    (head,) = [v for v in report.sweeps[0].part.verdicts if v["check"] == "head"]
    assert head["verdict"] == check_head(pd.read_parquet(sweep / "runs.parquet")).verdict == "fail"


def test_a_bare_ledger_co_scaled_columns_and_one_method(tmp_path):
    """examples/ledgers/predict_tiny.parquet alone (no spec, plan or curves): depth is the axis, width and
    tokens follow it, one method has no CEL, no curves no stability."""
    d = tmp_path / "predict_tiny"
    d.mkdir()
    shutil.copy(ROOT / "examples/ledgers/predict_tiny.parquet", d / "runs.parquet")
    report = build_report([d], Options(n_boot=B))
    reported, skipped = applicability(report)
    assert reported == {"LR optima", "transfer along depth"}
    assert "one method only" in skipped["compute fits"] and "no run" in skipped["stability check"]
    settings = next(b for b in report.sweeps[0].blocks if getattr(b, "caption", "") == "What varies among the runs")
    roles = {r[0]: r[2] for r in settings.rows}
    assert roles == {"depth": "a cell column", "width": "follows depth (one value per cell)",
                     "tokens": "follows depth (one value per cell)", "lr": "within a cell"}


def test_a_size_and_budget_grid_gets_a_chinchilla_fit_that_recovers_its_law(tmp_path):
    report = build_report([chinchilla_grid(tmp_path)], Options(n_boot=B))
    reported, skipped = applicability(report)
    assert {"Chinchilla fit", "transfer along width", "transfer along tokens"} <= reported
    (fit,) = [b for b in report.sweeps[0].blocks if getattr(b, "caption", "").endswith("(N, D) points")]
    assert fit.caption == "hyperp: 12 (N, D) points"
    values = {name: float(text.split()[0]) for name, text in fit.rows}
    for name, tol in (("E", 0.03), ("alpha", 0.01), ("beta", 0.01)):
        assert values[name] == pytest.approx(CHINCHILLA[name], abs=tol)
    assert "one method only" in skipped["compute fits"]


def test_several_sweeps_make_one_report_with_prefixed_figure_files(tmp_path):
    a, b = tiny_sweep(tmp_path, "a"), tiny_sweep(tmp_path, "b", "tokens", (65536, 131072, 262144))
    res = runner().invoke(app, ["report", str(a), str(b), "-o", str(tmp_path / "out"), "--format", "md", "-B", "20",
                                "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert [s["sweep"] for s in out["sweeps"]] == ["a", "b"]
    names = [Path(f).name for f in out["files"][1:]]
    assert len(names) == sum(s["figures"] for s in out["sweeps"]) and {n.split("-")[0] for n in names} == {"a", "b"}


def empty_ledger(tmp_path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    pd.DataFrame({"run_id": pd.Series([], dtype=str), "status": pd.Series([], dtype=str)}).to_parquet(
        d / "runs.parquet")
    return d


@pytest.mark.parametrize("case", ["missing", "empty", "format", "inside"])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, case):
    sweep = tiny_sweep(tmp_path)
    out = tmp_path / "out"
    args = {"missing": [str(tmp_path / "no_such_sweep"), "-o", str(out)],
            "empty": [str(empty_ledger(tmp_path)), "-o", str(out)],
            "format": [str(sweep), "-o", str(out), "--format", "pdf"],
            "inside": [str(sweep), "-o", str(sweep / "report")]}[case]
    before = snapshot(sweep)
    res = runner().invoke(app, ["report", *args])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and {"missing": "no_such_sweep", "empty": "holds no runs", "format": "pdf",
                                           "inside": "never writes into a sweep"}[case] in line
    assert not out.exists() and snapshot(sweep) == before


def test_figures_decode_and_png_size_reads_ihdr():
    from hyperp.plots.style import new_figure, paper, png_bytes

    with paper():
        fig, ax = new_figure(size=(2.0, 1.0))
        ax.plot([1, 2], [3, 4])
    png = png_bytes(fig, dpi=100)
    w, h = png_size(png)
    from io import BytesIO

    assert Image.open(BytesIO(png)).size == (w, h) and 150 < w <= 200 and 60 < h <= 100
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(30))
    # the HTML page embeds the very bytes, at the pixel size PIL reads (one image pixel per CSS pixel)
    import base64

    from hyperp.report.doc import render_html

    img = re.search(r'src="data:image/png;base64,([^"]+)" alt="c" width="(\d+)" height="(\d+)"',
                    render_html("t", [Figure("f", png, "c")]))
    assert base64.b64decode(img[1]) == png and (int(img[2]), int(img[3])) == Image.open(BytesIO(png)).size
