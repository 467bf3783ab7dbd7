"""A generated section of a document: the text between two marker lines, replaced whole (the
README's model, cost, benchmark and mutation tables are each written by what measured them)."""

from __future__ import annotations

from pathlib import Path


def read_section(path: Path, markers: tuple[str, str]) -> str:
    start, end = markers
    return path.read_text().split(start, 1)[1].split(end, 1)[0]


def write_section(path: Path, markers: tuple[str, str], text: str, *, required: bool = False) -> bool:
    """Put `text` between the markers; → whether the document has them (an error if `required`)."""
    start, end = markers
    content = path.read_text()
    if start not in content or end not in content:
        if required:
            raise ValueError(f"{path} has no {start.strip()} … {end} section")
        return False
    head, rest = content.split(start, 1)
    path.write_text(head + start + text + rest[rest.index(end) :])
    return True
