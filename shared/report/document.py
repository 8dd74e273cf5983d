"""The report as a list of sections, rendered to markdown here and to HTML in ``html.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.report.tables import Table


@dataclass
class Section:
    """A titled block of paragraphs, bullet items, tables and figures (PNG file names)."""

    title: str
    id: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def to_markdown(title: str, sections: list[Section]) -> str:
    """The whole report as markdown; figures are linked by their file names."""
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        if sec.bullets:
            out += [f"- {b}" for b in sec.bullets] + [""]
        for fig in sec.figures:
            out += [f"![{fig}]({fig})", ""]
        for table in sec.tables:
            out += [table.to_markdown()]
    return "\n".join(out).rstrip() + "\n"
