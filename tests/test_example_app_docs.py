"""docs/example-app.md quotes the example app's code: each quoted block must still be in the file it
names, so the walkthrough cannot drift from the app.

A quote is a Python block marked ``<!-- fragment: excerpt of <path> -->`` on the line before; its lines
(indentation aside) appear in that file in the same order, and a line ``...`` stands for lines left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_docs import python_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "example-app.md"
MARKER = re.compile(r"^<!-- fragment: excerpt of (\S+) -->$")


def excerpts(page: Path) -> list[tuple[int, Path, list[str]]]:
    """(line, quoted file, the quote's lines without indentation, elisions dropped) of every excerpt."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    for block in python_blocks(page):
        marker = MARKER.match(lines[block.line - 2].strip())
        if marker:
            quoted = [line.strip() for line in block.code.splitlines() if line.strip() not in ("", "...")]
            found.append((block.line, ROOT / marker.group(1), quoted))
    return found


def missing_from(quoted: list[str], source: Path) -> str | None:
    """The first quoted line not found in ``source`` after the previous one, or None when all are."""
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    at = 0
    for line in quoted:
        try:
            at = lines.index(line, at) + 1
        except ValueError:
            return line
    return None


def test_every_excerpt_is_still_in_the_app() -> None:
    """Every excerpt on the example app's page is, line by line and in order, in the file it names."""
    found = excerpts(PAGE)
    assert len(found) >= 3, "the page lost its excerpts (or their markers)"
    for line, source, quoted in found:
        assert source.is_file(), f"docs/example-app.md:{line} quotes {source}, which does not exist"
        missing = missing_from(quoted, source)
        assert missing is None, f"docs/example-app.md:{line}: {missing!r} is no longer in {source.relative_to(ROOT)}"


def test_a_changed_line_is_caught(tmp_path: Path) -> None:
    """An excerpt whose line changed in the source, or whose lines are out of order, is reported."""
    source = tmp_path / "app.py"
    source.write_text("def f():\n    a = 1\n    return a\n", encoding="utf-8")
    assert missing_from(["def f():", "return a"], source) is None
    assert missing_from(["def f():", "a = 2"], source) == "a = 2"
    assert missing_from(["return a", "a = 1"], source) == "a = 1"
