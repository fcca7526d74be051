"""The notebook runs as shipped (its code cells, in order) and shows the degradation it claims."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_degradation_notebook_runs_and_shows_the_stale_model_degrading(monkeypatch, store):
    monkeypatch.chdir(REPO / "notebooks")
    notebook = json.loads((REPO / "notebooks" / "degradation.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "degradation.ipynb", "exec"), namespace)
    monthly = namespace["monthly"]
    stale, fresh = monthly["trained 2011-04-30"], monthly["refit each month"]
    assert stale["2012-06":"2012-09"].mean() > 1.8 * stale["2011-05":"2011-08"].mean()
    assert fresh["2012-03":"2012-10"].mean() < 0.6 * stale["2012-03":"2012-10"].mean()
    # the custom-model path: a pipeline of the user's, bootstrapped then retrained from Python
    first, later = namespace["first"], namespace["later"]
    assert first.outcome == "promoted" and later.outcome == "promoted"
    assert later.decision.fired == ["metric_threshold"] and later.promotion.candidate < later.promotion.baseline
