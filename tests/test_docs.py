"""The concepts page stays in step with the transition table it documents."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from broadcast_lifecycle.diagram import BEGIN, END, main, render, splice
from broadcast_lifecycle.lifecycle import INITIAL, RULES, Trigger

CONCEPTS = Path(__file__).resolve().parent.parent / "docs" / "concepts.md"
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
        triples += [(trigger, "[*]" if s == "(none)" else s, dest) for s in sources.split(", ")]
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
        (rule.trigger.value, source.value, rule.dest.value) for rule in RULES for source in rule.sources
    }
    assert len(in_table) == len(set(in_table))
    assert set(in_table) == expected
    assert drawn_triples == Counter(expected)
