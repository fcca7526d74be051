"""The parts of docs/architecture.md read off the package's source and .importlinter: an MkDocs hook.

The rings and what imports what are taken from the contracts and the modules as they are when the site
is built, so the page cannot describe a layout the code has left.
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1] / "mlflow_retrain"
IMPORTS = "<!-- package-imports -->"
RINGS = "<!-- package-rings -->"
CONTRACTS = PACKAGE.parent / ".importlinter"


def _modules() -> list[tuple[str, str]]:
    """(dotted name, source) of every module of the package, sorted by path."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path.read_text(encoding="utf-8")))
    return found


def _short(name: str) -> str:
    return name.removeprefix("mlflow_retrain.") if name != "mlflow_retrain" else "(package)"


def _targets(node: ast.AST, module: str, known: set[str]) -> set[str]:
    """The package modules an import statement names (relative imports resolved against `module`;
    `from mlflow_retrain import registry` is the module `registry`, not the package)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith("mlflow_retrain")}
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
        if base.startswith("mlflow_retrain"):
            return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return set()


def _at_import_time(node: ast.AST) -> list[ast.AST]:
    """The statements that run when the module is imported: not function bodies, not `if TYPE_CHECKING:`."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            found += [n for branch in child.orelse for n in [branch, *_at_import_time(branch)]]
            continue
        found += [child, *_at_import_time(child)]
    return found


def imports_table() -> str:
    """One row per module: the package modules it imports at the top, and those imported inside functions."""
    rows = ["| module | lines | imports at module top | imports inside functions or `TYPE_CHECKING` |",
            "| --- | ---: | --- | --- |"]
    modules = _modules()
    known = {name for name, _ in modules}
    for name, source in modules:
        tree = ast.parse(source)
        top = {t for node in _at_import_time(tree) for t in _targets(node, name, known)}
        later = {t for node in ast.walk(tree) for t in _targets(node, name, known)} - top
        shown = [", ".join(f"`{_short(t)}`" for t in sorted(group - {name})) for group in (top, later)]
        rows.append(f"| `{_short(name)}` | {len(source.splitlines())} | {shown[0]} | {shown[1]} |")
    return "\n".join(rows)


def _layers() -> list[list[str]]:
    """The rings, top first, as the layers contract in .importlinter states them (`a | b`: side by side)."""
    parser = configparser.ConfigParser()
    parser.read(CONTRACTS, encoding="utf-8")
    layered = [s for s in parser.sections() if parser[s].get("type") == "layers"]
    lines = parser[layered[0]]["layers"].split("\n")
    return [[name.strip() for name in line.split("|")] for line in lines if line.strip()]


def _summary(source: str) -> str:
    doc = ast.get_docstring(ast.parse(source)) or ""
    return _escaped(doc.split("\n\n")[0].replace("\n", " ")) if doc else ""


def rings_table() -> str:
    """One row per ring, top first: its modules, their length and what each is for (first docstring paragraph)."""
    rows = ["| ring | module | lines | what it is for |", "| --- | --- | ---: | --- |"]
    modules = _modules()
    for layer in _layers():
        for ring in layer:
            prefix = f"mlflow_retrain.{ring}"
            for name, source in modules:
                if name == prefix or name.startswith(prefix + "."):
                    rows.append(f"| `{ring}` | `{_short(name)}` | {len(source.splitlines())} | {_summary(source)} |")
    return "\n".join(rows)


def rings_diagram() -> str:
    """The rings as a text drawing, top first, each importing only the rings below it."""
    return "\n".join(["```text", *("   " + "  |  ".join(layer) + "\n      ↓" for layer in _layers()), "```"]).replace(
        "\n      ↓\n```", "\n```")


def _escaped(text: str) -> str:
    """`<` and `>` outside code spans as entities: a docstring's `<column>` is text, not an HTML tag."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs hook: fill in the markers."""
    if RINGS in markdown:
        markdown = markdown.replace(RINGS, rings_diagram() + "\n\n" + rings_table())
    if IMPORTS in markdown:
        markdown = markdown.replace(IMPORTS, imports_table())
    return markdown
