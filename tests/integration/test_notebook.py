"""The notebook runs as shipped (its code cells, in order), shows the degradation it claims, and its
outputs hold the plots it describes."""

from __future__ import annotations

import ast
import contextlib
import io
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLOTLY = "application/vnd.plotly.v1+json"


def execute(notebook: dict, namespace: dict | None = None) -> dict:
    """Run the code cells in order as a kernel does, filling in each cell's outputs: what it printed,
    and the value of its last expression with its rich forms (a plotly figure's JSON, a frame's
    HTML). No Jupyter kernel is needed (nbclient and ipykernel are not dependencies). A `namespace`
    carries the variables across calls (`benchmarks/bench_notebook.py` times one cell per call)."""
    namespace = {} if namespace is None else namespace
    count = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        tree = ast.parse("".join(cell["source"]))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(tree, "degradation.ipynb", "exec"), namespace)
            value = None if last is None else eval(compile(ast.Expression(last.value), "degradation.ipynb", "eval"),
                                                   namespace)
        outputs: list[dict] = []
        if printed.getvalue():
            outputs.append({"output_type": "stream", "name": "stdout", "text": printed.getvalue()})
        if value is not None:
            data = {"text/plain": repr(value)}
            if hasattr(value, "_repr_mimebundle_"):
                data.update(value._repr_mimebundle_())
            elif hasattr(value, "_repr_html_"):
                data["text/html"] = value._repr_html_()
            outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {}, "data": data})
        cell["outputs"], cell["execution_count"] = outputs, count
    return namespace


def test_degradation_notebook_runs_and_shows_the_stale_model_degrading(monkeypatch, store, tmp_path):
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")  # what Jupyter shows a figure as
    monkeypatch.chdir(REPO / "notebooks")
    notebook = json.loads((REPO / "notebooks" / "degradation.ipynb").read_text())
    namespace = execute(notebook)
    (tmp_path / "degradation.executed.ipynb").write_text(json.dumps(notebook))
    monthly = namespace["monthly"]
    stale, fresh = monthly["trained 2011-04-30"], monthly["refit each month"]
    assert stale["2012-06":"2012-09"].mean() > 1.8 * stale["2011-05":"2011-08"].mean()
    assert fresh["2012-03":"2012-10"].mean() < 0.6 * stale["2012-03":"2012-10"].mean()
    # the custom-model path: a pipeline of the user's, bootstrapped then retrained from Python
    first, later = namespace["first"], namespace["later"]
    assert first.outcome == "promoted" and later.outcome == "promoted"
    assert later.decision.fired == ["metric_threshold"] and later.promotion.candidate < later.promotion.baseline

    # the plots are in the executed notebook's outputs, as plotly figures with data
    figures = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if PLOTLY in output.get("data", {}):
                figure = output["data"][PLOTLY]
                figures[figure["layout"]["title"]["text"]] = figure
    assert len(figures) == 4, list(figures)

    degradation = next(f for t, f in figures.items() if "per month" in t)
    assert {trace["name"] for trace in degradation["data"]} == {"trained 2011-04-30", "refit each month"}

    # Production's error per window from the monitor: both versions, the stale one worse before the swap
    production = next(f for t, f in figures.items() if "per weekly window (monitor)" in t)
    assert {trace["name"] for trace in production["data"]} == {"v1", "v2"}
    v1 = next(trace for trace in production["data"] if trace["name"] == "v1")
    assert len(v1["y"]) > 40 and max(v1["y"]) > 80  # weekly windows 2011-05..2012-06, over the threshold

    # one cycle's decision: the trigger against its limit, the gate's two numbers
    decision = next(f for t, f in figures.items() if t.startswith("cycle as of 2012-06-30: promoted"))
    bars = {x: y for trace in decision["data"] for x, y in zip(trace["x"], trace["y"])}
    assert bars["metric_threshold limit"] == 80 and bars["metric_threshold value"] > 80
    assert bars["candidate"] == later.promotion.candidate < bars["Production"] == later.promotion.baseline

    # the backtest's trade-off: a point per policy, never retraining has the worst mean error
    frontier = next(f for t, f in figures.items() if t.startswith("Backtest"))
    points = dict(zip(frontier["data"][0]["text"], zip(frontier["data"][0]["x"], frontier["data"][0]["y"])))
    assert {"never", "configured", "trend", "drift"} <= set(points) and points["never"][0] == 0
    assert points["never"][1] == max(y for _, y in points.values())
