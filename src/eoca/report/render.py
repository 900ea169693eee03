"""A self-contained HTML report: one file, no external CSS, fonts, scripts or images.

The report is opened from disk by people who may be offline, behind a proxy that blocks CDNs, or reading it
months later, so everything it needs is inlined: the stylesheet sits in a ``<style>`` element and plots are
PNG data URIs. Text is always escaped; the only markup a caller can use is ``**bold**`` and ```code```, so no
data value (a fund name, a file path) can break the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eoca.errors import EocaError
from eoca.io import write_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

Formatter = str | Callable[[Any], str]
"""A column format: a ``str.format`` template such as ``"{:+.1f}%"``, a bare spec such as ``",.2f"``, or a
callable returning the cell text."""


@dataclass(frozen=True)
class Paragraph:
    """Free text between other blocks (``**bold**`` and ```code``` are honoured, all else is escaped)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of rows (dicts). Columns default to the keys in order of first appearance.

    Attributes:
        rows: one mapping per row; missing keys and ``None``/NaN render as a dash.
        columns: column keys to show, in order.
        labels: header text per column key (default: the key with underscores as spaces).
        formats: per-column :data:`Formatter`; numbers without one get a sensible default.
        highlight: a numeric column whose best row (all tied best rows) is highlighted.
        best: whether "best" in ``highlight`` means the largest or the smallest value.
        caption: a line under the table, e.g. what the highlight means or the data source.
    """

    rows: Sequence[Mapping[str, Any]]
    columns: Sequence[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    formats: Mapping[str, Formatter] = field(default_factory=dict)
    highlight: str | None = None
    best: Literal["max", "min"] = "max"
    caption: str | None = None


@dataclass(frozen=True)
class Image:
    """A PNG plot, embedded as a data URI. ``png`` is the file's bytes or a path to it."""

    png: bytes | str | os.PathLike[str]
    alt: str
    caption: str | None = None


@dataclass(frozen=True)
class Facts:
    """Key figures shown as tiles, e.g. ("Customers", 50_000). Values are formatted like table cells."""

    items: Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Note:
    """A callout: ``info`` (context), ``approximation`` (a stated simplification) or ``warning``."""

    text: str
    kind: Literal["info", "approximation", "warning"] = "info"
    title: str | None = None


Block = Paragraph | Table | Image | Facts | Note


@dataclass(frozen=True)
class Section:
    """A titled part of the report: a plain-language explanation, then its content blocks in order."""

    heading: str
    explanation: str
    blocks: Sequence[Block] = ()


@dataclass(frozen=True)
class Report:
    """The whole report.

    Attributes:
        title: page and document title.
        date: when the numbers were produced (a date, datetime or preformatted string).
        summary: plain-language key findings, each rendered as one bullet.
        sections: rendered in order, each linked from the contents list.
        subtitle: a line under the title, e.g. the configuration or dataset.
        footer: provenance shown at the bottom (e.g. eoca version, run folder).
    """

    title: str
    date: str | dt.date
    summary: Sequence[str]
    sections: Sequence[Section]
    subtitle: str | None = None
    footer: str | None = None


def render_report(path: str | os.PathLike[str], report: Report) -> Path:
    """Render ``report`` to a self-contained HTML file at ``path`` (written atomically); return the path."""
    return write_text(render_html(report), path)


def render_html(report: Report) -> str:
    """The report as one HTML document string."""
    date = report.date.isoformat() if isinstance(report.date, dt.date) else str(report.date)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        '<header class="masthead"><div class="wrap">',
        f"<h1>{_esc(report.title)}</h1>",
        '<p class="meta">',
        f'<span class="date">{_esc(date)}</span>',
    ]
    if report.subtitle:
        parts.append(f'<span class="sep" aria-hidden="true">&middot;</span><span>{_inline(report.subtitle)}</span>')
    parts += ["</p>", "</div></header>", '<main class="wrap">']

    parts.append('<section class="card summary" id="summary"><h2>Summary</h2>')
    if report.summary:
        parts.append("<ul>" + "".join(f"<li>{_inline(s)}</li>" for s in report.summary) + "</ul>")
    if report.sections:
        links = "".join(
            f'<li><a href="#section-{i}">{_esc(s.heading)}</a></li>' for i, s in enumerate(report.sections, 1)
        )
        parts.append(f'<nav class="toc" aria-label="Contents"><h3>In this report</h3><ol>{links}</ol></nav>')
    parts.append("</section>")

    for i, section in enumerate(report.sections, 1):
        parts.append(f'<section class="card" id="section-{i}">')
        parts.append(f'<h2><span class="num">{i}</span>{_esc(section.heading)}</h2>')
        if section.explanation:
            parts.append(f'<p class="lede">{_inline(section.explanation)}</p>')
        for block in section.blocks:
            parts.append(_render_block(block, where=f"section '{section.heading}'"))
        parts.append("</section>")

    parts.append("</main>")
    footer = _inline(report.footer) if report.footer else ""
    parts.append(f'<footer class="wrap">{footer}</footer>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def format_value(value: Any, fmt: Formatter | None = None) -> str:
    """Cell text for ``value``: ``fmt`` if given, else thousands separators and precision by magnitude."""
    if _is_missing(value):
        return "\u2014"
    if fmt is not None:
        if callable(fmt):
            return fmt(value)
        return fmt.format(value) if "{" in fmt else format(value, fmt)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isinf(x):
            return "\u221e" if x > 0 else "-\u221e"
        magnitude = abs(x)
        # Enough digits to compare rows by eye, never a wall of decimals.
        if magnitude >= 1000:
            return f"{x:,.0f}"
        if magnitude >= 100:
            return f"{x:,.1f}"
        if magnitude >= 1 or x == 0:
            return f"{x:,.2f}"
        return f"{x:.3g}"
    return str(value)


def _render_block(block: Block, where: str) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        return _render_table(block)
    if isinstance(block, Image):
        return _render_image(block, where)
    if isinstance(block, Facts):
        # Words get a smaller size than figures so a tile like "Control: ESMM + manual" stays on one line.
        tiles = "".join(
            f'<div class="fact"><dt>{_esc(label)}</dt>'
            f"<dd{'' if _is_number(value) else ' class=words'}>{_esc(format_value(value))}</dd></div>"
            for label, value in block.items
        )
        return f'<dl class="facts">{tiles}</dl>'
    if isinstance(block, Note):
        default_title = {"info": "Note", "approximation": "Approximation", "warning": "Warning"}[block.kind]
        title = block.title or default_title
        return (
            f'<div class="note note-{block.kind}" role="note"><p><strong>{_esc(title)}.</strong> '
            f"{_inline(block.text)}</p></div>"
        )
    raise EocaError(f"{where}: cannot render a block of type {type(block).__name__}")


def _is_missing(value: Any) -> bool:
    return value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and math.isnan(float(value))
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _render_table(table: Table) -> str:
    columns = list(table.columns) if table.columns is not None else _keys_in_order(table.rows)
    numeric = {
        c: any(_is_number(r.get(c)) for r in table.rows)
        and all(r.get(c) is None or _is_number(r.get(c)) for r in table.rows)
        for c in columns
    }
    best_rows: set[int] = set()
    if table.highlight is not None:
        if table.highlight not in columns:
            raise EocaError(f"table highlight column '{table.highlight}' is not among its columns {columns}")
        scored = [
            (i, float(r[table.highlight]))
            for i, r in enumerate(table.rows)
            if _is_number(r.get(table.highlight)) and math.isfinite(float(r[table.highlight]))
        ]
        if scored:
            pick = max if table.best == "max" else min
            target = pick(v for _, v in scored)
            best_rows = {i for i, v in scored if v == target}

    head = "".join(
        f'<th scope="col"{" class=num" if numeric[c] else ""}>{_esc(_label(table, c))}</th>' for c in columns
    )
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for c in columns:
            value = row.get(c)
            text = format_value(value, table.formats.get(c))
            classes = [cls for cls, on in (("num", numeric[c]), ("missing", _is_missing(value))) if on]
            cls_attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls_attr}>{_esc(text)}</td>")
        row_cls = ' class="best"' if i in best_rows else ""
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    caption = table.caption or ""
    if best_rows and table.highlight is not None:
        label = _label(table, table.highlight)
        which = "highest" if table.best == "max" else "lowest"
        legend = f'<span class="legend"><span class="swatch"></span>{which} {_esc(label)}</span>'
        caption_html = f'<p class="table-caption">{legend}{_inline(caption)}</p>'
    else:
        caption_html = f'<p class="table-caption">{_inline(caption)}</p>' if caption else ""
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{caption_html}"
    )


def _label(table: Table, column: str) -> str:
    return table.labels.get(column, column.replace("_", " "))


def _keys_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _render_image(image: Image, where: str) -> str:
    if isinstance(image.png, bytes):
        data = image.png
    else:
        path = Path(image.png)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EocaError(f"{where}: cannot read image {path}: {exc.strerror or exc}") from None
    if not data.startswith(PNG_MAGIC):
        raise EocaError(f"{where}: image '{image.alt}' is not a PNG (only PNG images are embedded)")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    caption = f"<figcaption>{_inline(image.caption)}</figcaption>" if image.caption else ""
    return f'<figure><img src="{uri}" alt="{_esc(image.alt)}">{caption}</figure>'


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    # Escape first, then add the two allowed marks: the patterns cannot match anything that escaping produced.
    out = _esc(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


_CSS = """
:root {
  --ink: #1c2733; --muted: #5b6b7c; --line: #dfe5ec; --bg: #f3f5f8; --card: #ffffff;
  --accent: #1f5fbf; --accent-soft: #e8f0fc; --best: #fff6d6; --best-line: #e0b000;
  --warn: #b4530a; --warn-soft: #fff4e5; --approx: #6a4fb3; --approx-soft: #f3effc;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 16px/1.6 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif;
}
.wrap { max-width: 1080px; margin: 0 auto; padding: 0 28px; }
.masthead { background: #14314f; color: #fff; padding: 36px 0 30px; margin-bottom: 28px; }
.masthead h1 {
  margin: 0 0 6px; font-size: 30px; line-height: 1.25; font-weight: 650; letter-spacing: -0.01em;
}
.masthead .meta { margin: 0; color: #c4d3e3; font-size: 15px; }
.masthead .sep { margin: 0 10px; }
.masthead code { background: rgba(255, 255, 255, 0.12); color: #fff; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 26px 30px 24px; margin: 0 0 24px; box-shadow: 0 1px 2px rgba(20, 40, 70, 0.05);
}
h2 { font-size: 21px; line-height: 1.3; margin: 0 0 10px; font-weight: 650; }
h2 .num {
  display: inline-block; min-width: 28px; height: 28px; line-height: 28px; margin-right: 10px;
  border-radius: 50%; background: var(--accent-soft); color: var(--accent); font-size: 14px;
  text-align: center; vertical-align: 2px;
}
h3 { font-size: 15px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
p { margin: 0 0 14px; }
.lede { color: #34495e; max-width: 78ch; }
code {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 0.88em; background: #eef2f6; padding: 1px 5px; border-radius: 4px;
}
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.summary { border-top: 4px solid var(--accent); }
.summary ul { margin: 0 0 18px; padding-left: 22px; }
.summary li { margin: 0 0 8px; max-width: 84ch; }
.toc { border-top: 1px solid var(--line); padding-top: 14px; }
.toc ol {
  margin: 0; padding: 0; list-style: none; counter-reset: toc;
  display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 4px 24px;
}
.toc li { counter-increment: toc; font-size: 15px; }
.toc li::before { content: counter(toc) "."; color: var(--muted); margin-right: 8px; }
.table-wrap { overflow-x: auto; margin: 6px 0 4px; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 8px 10px; text-align: left; border-bottom: 1px solid var(--line); }
td { white-space: nowrap; }
th {
  background: #f6f8fb; color: #3d4f62; font-weight: 600; font-size: 13px; line-height: 1.3;
  border-bottom: 2px solid #cfd8e3; vertical-align: bottom; min-width: 4.5em;
}
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.missing { color: #9aa8b6; }
tbody tr:nth-child(even) { background: #fafbfd; }
tbody tr:last-child td { border-bottom: none; }
tbody tr:hover { background: #f0f5fc; }
tbody tr.best { background: var(--best); }
tbody tr.best td:first-child { box-shadow: inset 4px 0 0 var(--best-line); font-weight: 600; }
.table-caption { font-size: 13.5px; color: var(--muted); margin: 6px 0 18px; }
.legend { display: inline-flex; align-items: center; margin-right: 14px; }
.swatch {
  display: inline-block; width: 12px; height: 12px; margin-right: 6px; border-radius: 2px;
  background: var(--best); border: 1px solid var(--best-line);
}
figure { margin: 10px 0 20px; }
figure img {
  display: block; width: 100%; max-width: 960px; height: auto; margin: 0 auto;
  border: 1px solid var(--line); border-radius: 8px; background: #fff;
}
figcaption { font-size: 13.5px; color: var(--muted); margin-top: 8px; text-align: center; }
.facts {
  display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; margin: 4px 0 18px;
}
.fact { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fafbfd; }
.fact dt { font-size: 12.5px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; }
.fact dd { margin: 2px 0 0; font-size: 21px; font-weight: 600; font-variant-numeric: tabular-nums; }
.fact dd.words { font-size: 16px; line-height: 1.4; padding-top: 4px; }
.note { border-left: 4px solid var(--accent); background: var(--accent-soft); padding: 10px 16px;
  border-radius: 0 8px 8px 0; margin: 6px 0 18px; font-size: 15px; }
.note p { margin: 0; }
.note-warning { border-left-color: var(--warn); background: var(--warn-soft); }
.note-warning strong { color: var(--warn); }
.note-approximation { border-left-color: var(--approx); background: var(--approx-soft); }
.note-approximation strong { color: var(--approx); }
footer { color: var(--muted); font-size: 13px; padding-bottom: 40px; }
@media (max-width: 640px) {
  .wrap { padding: 0 14px; } .card { padding: 18px 16px; } .masthead h1 { font-size: 24px; }
}
@media print {
  body { background: #fff; } .masthead { background: none; color: var(--ink); padding: 0 0 12px; }
  .masthead .meta { color: var(--muted); } .card { box-shadow: none; break-inside: avoid-page; }
}
"""
