"""Decision quality on two real datasets: in sample and walk-forward, budgets, late labels.

Issue 14. For the bundled bike data (daily steps, 2011-05-01 .. 2012-12-31) and Google's daily stock
prices (`bench_small_reference.py`'s data: matplotlib's `sample_data/goog.npz`, Matplotlib licence,
prices from Yahoo! Finance; weekly steps 2005-09-01 .. 2008-10-14), the real `mlflow-retrain backtest`
CLI runs:

1. every default policy with `--folds 4`: each policy's mean and p90 error and retrains over the
   whole history (in sample) and over the out-of-sample windows (after the first fold), the
   walk-forward rule's own out-of-sample record, the recommendation, its error as a ratio to
   retraining at every step (the floor) and its retrains as a fraction of the floor's, and its gain
   over a schedule with the same number of retrains;
2. with `--label-delay 7d`: never, configured, the label-free `estimated` policy (the threshold on
   NannyML's estimate of the newest, unlabelled week) and every step, each also replayed with labels
   at once (the delay's cost).

Both policies are the ones shipped or written for the dataset before this benchmark existed; no
default was tuned on either. Prints markdown for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_decisions.py [--only bike|goog] [--jobs 2] [--charts docs]

`--charts DIR` also writes DIR/walk-forward-<data>.png, the backtest report's walk-forward chart as
Chromium draws it (the README's picture).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
CLI = str(Path(sys.executable).with_name("mlflow-retrain"))

DATASETS = {
    # name: (policy writer, --from, --every)
    "bike": ("2011-05-01", "1d"),
    "goog": ("2005-09-01", "7d"),
}


def folder_for(name: str, root: Path) -> Path:
    folder = root / name
    if name == "bike":
        folder.mkdir(parents=True)
        text = (REPO / "retrain.yaml").read_text().replace("path: data/", f"path: {REPO}/data/")
        (folder / "retrain.yaml").write_text(text)
    else:
        from bench_small_reference import write_folder

        write_folder(folder)
    return folder


def backtest(folder: Path, *args: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'bench.db'}", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([CLI, "backtest", "--config", str(folder / "retrain.yaml"), *args, "--json",
                          "--out", str(folder / "out")], cwd=folder, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"backtest {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])


# the backtest report with only its walk-forward chart showing (Chromium supports :has)
ONLY_WALK_FORWARD = ("<style>.ok, h1, h2, p.muted, table, .modebar, div:has(> #tradeoff), div:has(> #over-time) "
                     "{display: none !important}</style>")


def walk_forward_png(folder: Path, name: str, charts: Path) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    from ui_screenshots import screenshot

    page = folder / "walk-forward.html"
    page.write_text((folder / "out" / "backtest.html").read_text().replace("</head>", ONLY_WALK_FORWARD + "</head>", 1))
    return screenshot(page.as_uri(), charts.resolve() / f"walk-forward-{name}.png", height=860)


def fmt(value, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def walk_forward_table(name: str, result: dict) -> str:
    rows = result["policies"]
    lines = [f"**{name}**: {result['steps']} steps {result['from'][:10]} .. {result['to'][:10]}, out of sample from "
             f"{result['walk_forward']['from'][:10]} ({result['folds']} folds, each run by "
             + ", ".join(f"{f['chosen']}" for f in result["walk_forward"]["folds"]) + f"), {result['seconds']:.0f} s",
             "",
             "| policy | retrains | rejected | mean | p90 | vs equal-budget schedule | OOS retrains | OOS mean | OOS p90 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        star = " (recommended)" if r.get("recommended") else ""
        lines.append(f"| {r['policy']}{star} | {fmt(r['retrains'], 'd') if r['retrains'] is not None else '-'} | "
                     f"{fmt(r.get('rejected'), 'd')} | {fmt(r['mean_metric'])} | {fmt(r['p90_metric'])} | "
                     f"{fmt(r['vs_schedule'], '+.1%') if r['vs_schedule'] is not None else '-'} | "
                     f"{r.get('oos_retrains', '-')} | {fmt(r.get('oos_mean_metric'))} | {fmt(r.get('oos_p90_metric'))} |")
    return "\n".join(lines)


def headline(name: str, result: dict) -> str:
    rows = {r["policy"]: r for r in result["policies"]}
    floor, chosen, forward = rows["every-window"], rows[result["recommended"]], rows["walk-forward"]
    configured = rows["configured"]
    return (f"| {name} | {result['recommended']} | {chosen['mean_metric'] / floor['mean_metric']:.3f} | "
            f"{chosen['retrains'] / floor['retrains']:.1%} | {fmt(chosen['vs_schedule'], '+.1%')} | "
            f"{forward['oos_mean_metric'] / floor['oos_mean_metric']:.3f} | "
            f"{forward['oos_retrains'] / max(floor['oos_retrains'], 1):.1%} | "
            f"{configured['mean_metric'] / floor['mean_metric']:.3f} | {configured['retrains'] / floor['retrains']:.1%} | "
            f"{fmt(configured['vs_schedule'], '+.1%')} |")


def delay_table(name: str, result: dict) -> str:
    lines = [f"**{name}**, labels 7 days late ({result['steps']} steps):", "",
             "| policy | retrains | mean | p90 | retrains, labels at once | mean, labels at once |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["policies"]:
        if r["family"] == "walk_forward" or r.get("equal_budget"):
            continue
        lines.append(f"| {r['policy']} | {r['retrains']} | {fmt(r['mean_metric'])} | {fmt(r['p90_metric'])} | "
                     f"{r.get('retrains_without_delay', '-')} | {fmt(r.get('mean_metric_without_delay'))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(DATASETS), default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--charts", type=Path, default=None, help="Folder for the walk-forward chart pictures.")
    args = parser.parse_args()
    names = [args.only] if args.only else list(DATASETS)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            start, every = DATASETS[name]
            folder = folder_for(name, Path(tmp))
            common = ["--from", start, "--every", every, "--jobs", str(args.jobs)]
            out[name] = {"folds": backtest(folder, *common, "--folds", "4")}
            if args.charts:
                print(f"chart: {walk_forward_png(folder, name, args.charts)}", file=sys.stderr)
            out[name]["delay"] = backtest(folder, *common, "--folds", "0", "--label-delay", "7d",
                                          "--policy", "never,configured,estimated,every-window")
    print("| data | recommended | its mean / floor | its retrains / floor's | vs equal-budget schedule | "
          "walk-forward OOS mean / floor OOS | walk-forward OOS retrains / floor's | configured mean / floor | "
          "configured retrains / floor's | configured vs schedule |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        print(headline(name, out[name]["folds"]))
    for name in names:
        print()
        print(walk_forward_table(name, out[name]["folds"]))
        print()
        print(delay_table(name, out[name]["delay"]))


if __name__ == "__main__":
    main()
