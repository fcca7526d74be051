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
