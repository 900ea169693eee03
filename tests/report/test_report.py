from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from eoca.errors import EocaError
from eoca.report import (
    Facts,
    Image,
    Note,
    Paragraph,
    Report,
    Section,
    Table,
    format_value,
    plots,
    render_report,
)
from eoca.report.render import PNG_MAGIC, render_html

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


class StrictParser(HTMLParser):
    """Fails on mismatched or unclosed tags and collects what the tests look for."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.h2: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.best_rows = 0
        self._in_h2 = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "tr" and ("class", "best") in attrs:
            self.best_rows += 1
        if tag == "h2":
            self._in_h2, self._text = True, []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "h2":
            self._in_h2 = False
            self.h2.append("".join(self._text).strip())

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self._text.append(data)


def parse(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def tiny_png() -> bytes:
    return plots.allocation_value_chart(["exact"], [100.0])


def sample_report(png_path: Path) -> Report:
    rows = [
        {"framework": "ESMM + manual", "deliveries": 10_000, "tapmd": 14_901.2, "lift": None},
        {"framework": "ESDPM + HA", "deliveries": 10_000, "tapmd": 28_568.0, "lift": 91.7},
        {"framework": "<b>odd & name</b>", "deliveries": 9_501, "tapmd": float("nan"), "lift": -3.25},
    ]
    return Report(
        title="Run report",
        date=dt.date(2025, 3, 14),
        subtitle="config `run.yaml`",
        summary=["ESDPM + HA lifts TAPMD by **91.7%**.", "HA stranded 499 customers."],
        sections=[
            Section(
                "Simulated online A/B test",
                "Each framework is shown to the same customers.",
                [
                    Facts([("Customers", 10_000), ("Control", "ESMM + manual")]),
                    Table(
                        rows,
                        labels={"tapmd": "TAPMD"},
                        formats={"lift": "{:+.1f}%"},
                        highlight="tapmd",
                        caption="Lifts against ESMM + manual.",
                    ),
                    Image(tiny_png(), alt="lift chart", caption="Lifts"),
                ],
            ),
            Section(
                "Allocation value",
                "Share of the optimum.",
                [
                    Image(png_path, alt="value chart"),
                    Note("HA stranded 499 customers.", kind="warning"),
                    Note("Amounts are simulated.", kind="approximation"),
                    Paragraph("Plain text <script>alert(1)</script>"),
                ],
            ),
            Section("Empty section", "Nothing to show yet."),
        ],
        footer="eoca 0.1.0",
    )


def test_report_is_self_contained_and_has_every_section(tmp_path: Path) -> None:
    png_path = tmp_path / "value.png"
    png_path.write_bytes(tiny_png())
    report = sample_report(png_path)
    out = render_report(tmp_path / "run" / "report.html", report)
    assert out == tmp_path / "run" / "report.html"
    text = out.read_text(encoding="utf-8")
    parsed = parse(text)
    assert parsed.h2[0] == "Summary"
    # Headings carry their section number in a badge before the title text.
    for i, section in enumerate(report.sections, 1):
        assert f"{i}{section.heading}" in parsed.h2
        assert f'href="#section-{i}"' in text and f'id="section-{i}"' in text
    assert len(parsed.imgs) == 2
    for img in parsed.imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,iVBORw0KGgo")  # base64 of the PNG signature
    assert not re.search(r"https?://", text)
    assert "<script" not in text and "<link" not in text
    assert "&lt;b&gt;odd &amp; name&lt;/b&gt;" in text
    assert "<strong>91.7%</strong>" in text and "<code>run.yaml</code>" in text
    assert "note-warning" in text and "note-approximation" in text
    assert list(tmp_path.joinpath("run").iterdir()) == [out]  # atomic write left no temporary file


def test_table_highlights_best_row_and_formats_cells() -> None:
    rows = [{"m": "a", "v": 3.0}, {"m": "b", "v": 7.5}, {"m": "c", "v": None}, {"m": "d", "v": 7.5}]
    html_max = render_html(Report("t", "today", [], [Section("s", "e", [Table(rows, highlight="v")])]))
    assert parse(html_max).best_rows == 2  # ties are all best
    html_min = render_html(Report("t", "today", [], [Section("s", "e", [Table(rows, highlight="v", best="min")])]))
    assert parse(html_min).best_rows == 1
    assert "lowest v" in html_min
    assert '<td class="num missing">\u2014</td>' in html_min
    with pytest.raises(EocaError, match="highlight column 'zz'"):
        render_html(Report("t", "d", [], [Section("s", "e", [Table(rows, highlight="zz")])]))


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (None, None, "\u2014"),
        (float("nan"), ".2f", "\u2014"),
        (1234567, None, "1,234,567"),
        (np.int64(42), None, "42"),
        (14901.234, None, "14,901"),
        (123.456, None, "123.5"),
        (2.6912, None, "2.69"),
        (0.000123456, None, "0.000123"),
        (0.0, None, "0.00"),
        (True, None, "yes"),
        (7.06, "{:+.2f}%", "+7.06%"),
        (0.9313, ".4f", "0.9313"),
        (3, lambda v: f"<{v}>", "<3>"),
        ("text", None, "text"),
    ],
)
def test_format_value(value, fmt, expected) -> None:
    assert format_value(value, fmt) == expected


def test_image_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(EocaError, match="is not a PNG"):
        render_html(Report("t", "d", [], [Section("Plots", "e", [Image(b"GIF89a....", alt="x")])]))
    with pytest.raises(EocaError, match="section 'Plots': cannot read image"):
        render_html(Report("t", "d", [], [Section("Plots", "e", [Image(tmp_path / "missing.png", alt="x")])]))


def test_plots_return_png_bytes() -> None:
    assert matplotlib.get_backend().lower() == "agg"
    rng = np.random.default_rng(0)
    n = 2000
    etv = rng.lognormal(3.0, 1.5, n) * (rng.random(n) > 0.1)
    conv = (rng.random(n) < 0.05).astype(float)
    pngs = [
        plots.lift_chart(
            ["ctrl", "a", "b"],
            {"CPMD": [None, 7.1, -2.0], "TAPMD": [None, -9.5, 36.5]},
            {"CPMD": [None, 2.0, -6.0], "TAPMD": [None, -15.0, 20.0]},
            {"CPMD": [None, 12.0, 1.5], "TAPMD": [None, -3.0, 50.0]},
            control="ctrl",
        ),
        plots.delivered_vs_demanded_chart(
            ["f1", "f2", "f3"], [100, 200, 300], {"HA": [100, 180, 300], "exact": [100, 200, 300]}
        ),
        plots.etv_distribution_chart({"ESMM": etv, "ESDPM": etv * 1.3}),
        plots.etv_distribution_chart({"all zero": np.zeros(10)}),
        plots.calibration_chart({"ESMM": etv}, conv * 50.0, {"ESMM": np.clip(etv / 1000, 0, 1)}, conv),
        plots.calibration_chart({"ESMM": etv - etv.min()}, conv * 50.0),
        plots.allocation_value_chart(
            ["manual", "HA", "exact"], [48.0, float("nan"), 100.0], wall_time_s=[0.01, 1, 200]
        ),
    ]
    for png in pngs:
        assert png.startswith(PNG_MAGIC) and len(png) > 2000


def test_calibration_bins_are_equal_count_means() -> None:
    pred = np.arange(100, dtype=float)[::-1]  # order must not matter
    real = pred * 2.0
    bins = plots.calibration_bins(pred, real, n_bins=10)
    assert bins.count.tolist() == [10] * 10
    assert bins.mean_predicted.tolist() == pytest.approx([4.5 + 10 * i for i in range(10)])
    assert bins.mean_realised == pytest.approx(bins.mean_predicted * 2.0)
    # Heavy ties at zero still give the requested number of non-empty bins.
    zeros = plots.calibration_bins(np.r_[np.zeros(80), np.arange(20.0)], np.ones(100), n_bins=10)
    assert zeros.count.sum() == 100 and len(zeros.count) == 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plots.calibration_bins([1.0, 2.0], [1.0]), "predicted has 2 values but realised has 1"),
        (
            lambda: plots.calibration_chart({"m": [1.0]}, [1.0], {"m": [0.5]}),
            "both predicted_p and converted",
        ),
        (lambda: plots.delivered_vs_demanded_chart(["a", "b"], [1, 2], {"HA": [1]}), "delivered\\['HA'\\]"),
        (lambda: plots.allocation_value_chart(["a"], [1.0, 2.0]), "2 values for 1 methods"),
        (
            lambda: plots.lift_chart(["a", "b"], {"CPMD": [1.0]}, {"CPMD": [1.0]}, {"CPMD": [1.0]}, control="a"),
            "one value per framework",
        ),
    ],
)
def test_plot_input_errors(call, message) -> None:
    with pytest.raises(EocaError, match=message):
        call()
