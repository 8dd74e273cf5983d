"""One self-contained HTML page: inline CSS, no scripts, figures embedded as base64 data URIs."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from shared.report.document import Section
from shared.report.tables import Table

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1f2328; background: #ffffff; padding: 0 1em; }
h1 { border-bottom: 2px solid #0969da; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
h3 { margin-top: 1.5em; font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #eaeef2; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f6f8fa; }
td.best { font-weight: bold; background: #dafbe1 !important; }
p.note { color: #57606a; font-size: .85em; max-width: 70em; }
code { background: #eff1f3; padding: 0 .25em; border-radius: 3px; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: .5em 0; }
"""


def _inline(text: str) -> str:
    """Escape text, then render the markdown used in notes: **bold** and `code`."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def table_html(table: Table) -> str:
    """One table with its title and notes."""
    parts = [
        f'<h3 id="{html.escape(table.id)}">{html.escape(table.title)}</h3>',
        f'<table class="{html.escape(table.kind)}" data-table="{html.escape(table.id)}">',
        "<thead><tr>",
    ]
    parts += [f"<th>{html.escape(c)}</th>" for c in table.columns]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = "".join(
            f'<td class="best">{html.escape(c.text)}</td>'
            if c.bold and c.text
            else f"<td>{html.escape(c.text)}</td>"
            for c in row
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    parts += [f'<p class="note">{_inline(n)}</p>' for n in table.notes]
    return "\n".join(parts)


def data_uri(png: Path) -> str:
    """A PNG file as a data URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section], figure_dir: Path) -> str:
    """The full page; figures are read from ``figure_dir`` and inlined."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        body.append(f'<section id="{html.escape(sec.id)}"><h2>{html.escape(sec.title)}</h2>')
        body += [f"<p>{_inline(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            body.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in sec.bullets) + "</ul>")
        for fig in sec.figures:
            path = figure_dir / fig
            if path.is_file():
                body.append(f'<img alt="{html.escape(fig)}" src="{data_uri(path)}">')
        body += [table_html(t) for t in sec.tables]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
