"""The docs cannot drift: the concepts page matches the transition table, every Python block runs (or is
marked as a fragment), the reference pages list every public name, and the command-line reference lists
every command and option."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import broadcast_lifecycle
from broadcast_lifecycle.cli import _parser
from broadcast_lifecycle.diagram import BEGIN, END, main, render, splice
from broadcast_lifecycle.lifecycle import INITIAL, RULES, Trigger

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONCEPTS = DOCS / "concepts.md"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])
FRAGMENT = re.compile(r"^<!-- fragment(: [^>]*)? -->$")
"""The line before a Python block that is a fragment (needs names the page does not define): it is not run.
A block whose first line is a ``# fragment: why`` comment is one too."""
_FRAGMENT_COMMENT = re.compile(r"^# fragment\b")
_FENCE = re.compile(r"^(\s*)```(\w*)")
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')
_EDGE = re.compile(r"^\s*(\S+) --> (\S+) : (\w+)")


def _generated_block() -> str:
    text = CONCEPTS.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)]


def _table_triples(block: str) -> list[tuple[str, str, str]]:
    """(trigger, source, dest) for every source of every row of the transition table in ``block``."""
    rows = block.split("| trigger | from | to |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    triples = []
    for row in rows:
        trigger, sources, dest = (cell.strip() for cell in row.strip("|").split("|")[:3])
        triples += [(trigger, "[*]" if s == "(none)" else s, s if dest == "(the same)" else dest)
                    for s in sources.split(", ")]
    return triples


def test_concepts_page_matches_render() -> None:
    """docs/concepts.md holds exactly what render() generates between its markers (run `make docs`)."""
    text = CONCEPTS.read_text(encoding="utf-8")
    assert splice(text, render()) == text
    assert main(["--check", str(CONCEPTS)]) == 0


def test_check_reports_a_drifted_page(tmp_path: Path) -> None:
    """--check exits 1 when the generated block was edited by hand and --write repairs it."""
    page = tmp_path / "concepts.md"
    page.write_text(f"intro\n{BEGIN}\n| stale | table |\n{END}\noutro\n", encoding="utf-8")
    assert main(["--check", str(page)]) == 1
    assert main(["--write", str(page)]) == 0
    assert main(["--check", str(page)]) == 0
    assert page.read_text(encoding="utf-8").startswith(f"intro\n{BEGIN}\n")


def test_mermaid_has_one_edge_per_table_transition() -> None:
    """The mermaid diagram draws exactly one edge per (trigger, source, dest) of the transition table."""
    block = _generated_block()
    mermaid = block.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = Counter(m.groups() for line in mermaid.splitlines() if (m := _EDGE.match(line)))
    drawn_triples = Counter((trigger, source, dest) for source, dest, trigger in drawn.elements())
    in_table = _table_triples(block)
    expected = {(Trigger.CREATE.value, "[*]", INITIAL.value)} | {
        (rule.trigger.value, source.value, rule.dest_from(source).value) for rule in RULES for source in rule.sources
    }
    assert len(in_table) == len(set(in_table))
    assert set(in_table) == expected
    assert drawn_triples == Counter(expected)


@dataclass(frozen=True)
class Block:
    """A fenced Python block of a docs page."""

    page: Path
    line: int
    code: str
    fragment: bool


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks in order; a block that is only a ``--8<-- "file"`` include is that file."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    previous = ""
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        indent, language = fence.groups()
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        body = [line[len(indent):] for line in lines[index + 1:end]]
        if language in ("python", "py"):
            code = "\n".join(body) + "\n"
            include = _INCLUDE.match(code.strip())
            if include:
                code = (ROOT / include.group(1)).read_text(encoding="utf-8")
            fragment = bool(FRAGMENT.match(previous) or _FRAGMENT_COMMENT.match(code))
            blocks.append(Block(page, index + 1, code, fragment))
        previous = ""
        index = end + 1
    return blocks


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_runs_or_is_a_fragment(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's Python blocks that are not marked `<!-- fragment -->` run in order, in one namespace (in a
    scratch directory), without error."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for block in python_blocks(page):
        if block.fragment:
            continue
        where = f"{_page_id(page)}:{block.line}"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(block.code, where, "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"the Python block at {where} failed ({type(exc).__name__}: {exc}); fix it, or mark it "
                        f"<!-- fragment: why --> on the line before when it cannot run on its own")


def test_the_block_scanner_sees_fragments_includes_and_indented_blocks(tmp_path: Path) -> None:
    """Fragments are recognised by the comment on the line before; includes are read; indented blocks count."""
    (tmp_path / "snippet.py").write_text("x = 1\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# t\n\n<!-- fragment: needs a session -->\n```python\nsession.commit()\n```\n\n"
                    "```python\nprint(1)\n```\n\n- item\n\n    ```python\n    y = 2\n    ```\n\n"
                    "```console\n$ ls\n```\n\n```python\n# fragment: in a handler\nreply(1)\n```\n",
                    encoding="utf-8")
    blocks = python_blocks(page)
    assert [(b.line, b.code, b.fragment) for b in blocks] == [
        (4, "session.commit()\n", True), (8, "print(1)\n", False), (14, "y = 2\n", False),
        (22, "# fragment: in a handler\nreply(1)\n", True)]
    assert len(python_blocks(DOCS / "index.md")) == 1
    assert python_blocks(DOCS / "index.md")[0].code == (ROOT / "examples" / "quickstart.py").read_text()


def test_reference_pages_list_every_public_name() -> None:
    """Each name in broadcast_lifecycle.__all__ has its own `::: broadcast_lifecycle.NAME` block in the reference."""
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: broadcast_lifecycle\.(\w+)$", page.read_text(encoding="utf-8"),
                                     re.MULTILINE))
    missing = sorted(set(broadcast_lifecycle.__all__) - documented)
    assert not missing, f"add `::: broadcast_lifecycle.NAME` blocks to docs/reference/ for {missing}"


def test_cli_reference_lists_every_command_and_option() -> None:
    """docs/reference/cli.md names every subcommand and every long option of the command line."""
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    for name, sub in commands.choices.items():
        assert f"| `{name}" in page, f"command {name} is not in the table"
        options |= {o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    missing = sorted(o for o in options if f"`{o}" not in page)
    assert not missing, f"options missing from docs/reference/cli.md: {missing}"


def test_the_site_builds_with_the_diagram_and_every_public_name(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds; the concepts page carries the diagram as a mermaid block (rendered by
    the theme) and the reference pages have an entry, generated from the docstrings, for every public name."""
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert '<pre class="mermaid"><code>stateDiagram-v2' in concepts
    reference = "".join(page.read_text(encoding="utf-8") for page in (site / "reference").rglob("index.html"))
    missing = [name for name in broadcast_lifecycle.__all__ if f'id="broadcast_lifecycle.{name}"' not in reference]
    assert not missing, f"no reference entry rendered for {missing}"
