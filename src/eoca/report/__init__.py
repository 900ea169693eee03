"""Self-contained HTML run reports and the PNG plots they embed."""

from eoca.report.render import (
    Block,
    Facts,
    Formatter,
    Image,
    Note,
    Paragraph,
    Report,
    Section,
    Table,
    format_value,
    render_html,
    render_report,
)

__all__ = [
    "Block",
    "Facts",
    "Formatter",
    "Image",
    "Note",
    "Paragraph",
    "Report",
    "Section",
    "Table",
    "format_value",
    "render_html",
    "render_report",
]
