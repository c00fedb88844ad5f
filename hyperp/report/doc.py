"""A report as blocks, and its two renderings.

Blocks are plain data (text is plain text: each renderer escapes it). `render_html` makes one self-contained
page: semantic HTML (headings, tables with a header row, figures with captions, pre), a small inline
stylesheet, figures as PNG data URIs, no script and nothing fetched from the network. `render_markdown` makes
GitHub-flavoured Markdown whose figures are PNG files beside it (relative links, named by `Figure.name`).
Standard library only.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; `lead` is set in bold before it, `tone` (pass, fail, inconclusive) colours the lead."""

    text: str
    lead: str = ""
    tone: str = ""


@dataclass(frozen=True)
class Table:
    """A table; `id` names it for `hyperp report --fill` (unique within a sweep's report, listed in
    hyperp/report/fill.py), "" for a table no Markdown file can ask for."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    id: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure (shown one image pixel per CSS pixel, at most the page's width); `name` is its file name
    without suffix in the Markdown rendering."""

    name: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = ""


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


Block = Heading | Para | Table | Figure | Code | Items


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "",
          id: str = "") -> Table:  # noqa: A002 (the Table's field)
    """A Table of text cells (each cell str()-ed)."""
    return Table(tuple(columns), tuple(tuple(str(c) for c in r) for r in rows), caption, id)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; ValueError when `png` is not a PNG."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG (no signature or IHDR chunk)")
    return struct.unpack(">II", png[16:24])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


# ---------------------------------------------------------------- HTML

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b; margin: 0;
       background: #fff; }
main { max-width: 68rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #e4e4e4; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { border: 1px solid #d8d8d8; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #444; }
pre { background: #f6f8fa; padding: .7rem; overflow-x: auto; font-size: 12px; }
.pass { color: #11772d; } .fail { color: #b3261e; } .inconclusive { color: #8a5a00; }
"""


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """One self-contained HTML page of the blocks."""
    body = "\n".join(_html(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n")


def _html(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f'<h{block.level} id="{slug(block.text)}">{e(block.text)}</h{block.level}>'
    if isinstance(block, Para):
        lead = f'<strong class="{e(block.tone)}">{e(block.lead)}</strong> ' if block.lead else ""
        return f"<p>{lead}{e(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f'<th scope="col">{e(c)}</th>' for c in block.columns)
        rows = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in block.rows)
        caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
        return f"<table>{caption}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
    if isinstance(block, Figure):
        w, h = png_size(block.png)
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}" '
                f'width="{w}" height="{h}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        return f"<pre><code>{e(block.text)}</code></pre>"
    return "<ul>\n" + "\n".join(f"<li>{e(i)}</li>" for i in block.items) + "\n</ul>"


# ---------------------------------------------------------------- Markdown


def render_markdown(title: str, blocks: Sequence[Block], figure_file: Callable[[Figure], str]) -> str:
    """GitHub-flavoured Markdown of the blocks; `figure_file(fig)` is the relative path each figure is linked by."""
    return f"# {_md(title)}\n\n" + "\n\n".join(_markdown(b, figure_file) for b in blocks) + "\n"


def _md(text: str) -> str:
    """Text that Markdown shows as written: `*` (eta*), `<` and `|` escaped, no line breaks."""
    return " ".join(text.replace("\\", "\\\\").replace("*", r"\*").replace("<", "&lt;").replace("|", r"\|").split())


def markdown_table(t: Table) -> str:
    """A table in GitHub-flavoured Markdown, its caption in bold above it (as `--fill` writes it too)."""
    lines = [f"**{_md(t.caption)}**", ""] if t.caption else []
    lines += ["| " + " | ".join(_md(c) for c in t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def _markdown(block: Block, figure_file: Callable[[Figure], str]) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {_md(block.text)}"
    if isinstance(block, Para):
        return (f"**{_md(block.lead)}** " if block.lead else "") + _md(block.text)
    if isinstance(block, Table):
        return markdown_table(block)
    if isinstance(block, Figure):
        return f"![{_md(block.caption)}]({figure_file(block)})\n\n*{_md(block.caption)}*"
    if isinstance(block, Code):
        return f"```{block.lang}\n{block.text.rstrip()}\n```"
    return "\n".join(f"- {_md(i)}" for i in block.items)
