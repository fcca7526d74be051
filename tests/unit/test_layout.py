"""The package's shape, held by a test: no module grows past what a reader takes in at once.

The rings themselves are `.importlinter`'s contracts (`make lint`, run by CI)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mlflow_retrain"
MAX_LINES = 450


def test_no_module_is_longer_than_450_lines():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
               for p in PACKAGE.rglob("*.py")}
    assert len(lengths) > 50
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_design_essays_live_in_the_docs_and_every_module_link_there_resolves():
    """A module says what it is for in a few lines; why it is built that way is a section of
    docs/design.md, and the link the module gives points at a section that exists."""
    import ast
    import re

    design = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r"\{#([a-z0-9-]+)\}", design))
    long, broken = [], []
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if len(doc.splitlines()) >= 10:
            long.append(str(path.relative_to(PACKAGE)))
        broken += [a for a in re.findall(r"docs/design\.md#([a-z0-9-]+)", doc) if a not in anchors]
    assert len(anchors) >= 30
    assert long == [] and broken == []


def test_only_loop_moves_reaches_the_registrys_stage_and_alias_writer():
    """.importlinter's protected contract sees imports; this sees attribute access, `registry.moves`,
    so that no module moves a version around the one path (`loop/moves.py`)."""
    import ast

    allowed = {"loop/moves.py"}
    reaching = []
    for path in PACKAGE.rglob("*.py"):
        name = str(path.relative_to(PACKAGE))
        if name in allowed or name.startswith("adapters/registry/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "moves":
                reaching.append(f"{name}:{node.lineno}")
    assert reaching == []
