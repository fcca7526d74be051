"""The story the MLflow UI tells: the gate's evidence on a version's page and Production's history on
the registered model's page, both as Markdown derived from tags alone.

Tags are the machine contract; these texts are views of them. A cycle records its gate's numbers,
the holdout's hash and where its audit run and Evidently reports are in the version's record, kept
as JSON in a comment at the end of its description with every value that is no tag (`record_block`;
stores written before kept them as tags, still read): a tag would show it raw in the versions list.
Every description is recomputed from the tags and that block after each move (`Versions.describe`),
so a description left stale by a crash is rewritten by the next cycle.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.verdicts import number

HISTORY_LIMIT = 10  # promotions shown on the registered model's page, newest first
BEGIN = "<!-- mlflow-retrain: Production history, rewritten from the version tags after every move -->"
END = "<!-- /mlflow-retrain -->"
REPORT_NAMES = {"data_drift.html": "data drift", "model_quality.html": "model quality"}


class Shown(Protocol):
    """What the history reads of a version (`versions.VersionInfo` is one): plain data, so the story
    needs nothing of the code that reads the registry."""

    @property
    def version(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def stage(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def tags(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Evidence:
    """What a version's page needs of the cycle that judged it, kept as `retrain.evidence` in its record:
    both models' scores on the one holdout, its window and hash, and the audit run with its reports
    (paths in that run). The cycle's report makes one (`loop/events.py`)."""

    metric: str
    candidate: float | None
    production: float | None
    production_version: str | None
    holdout_window: str | None
    holdout_digest: str | None
    run_id: str | None
    experiment_id: str
    reports: list[str]

    def to_json(self) -> str:
        """The tag's value; a score that is not a finite number is null (JSON has no NaN)."""
        return json.dumps({**dataclasses.asdict(self), "candidate": _finite(self.candidate),
                           "production": _finite(self.production)})


_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def padded(markdown: str) -> str:
    """Its tables with an em space closing every cell but a row's last: MLflow's stylesheet gives
    table cells no padding, so `| Production v1 | 68.71 |` would read "Production v168.71"."""
    return "\n".join(line if not line.startswith("|") or _SEPARATOR.match(line)
                     else re.sub(r"(?<=[^\s|\\]) \|(?=.)", "&emsp; |", line) for line in markdown.splitlines())


RECORD_BEGIN, EVIDENCE_BEGIN, BLOCK_END = "<!-- retrain.record ", "<!-- retrain.evidence ", " -->"
DESCRIPTION_LIMIT = 5000  # characters of a version's description (MLflow's column; PostgreSQL enforces it)
RECORD_LIMIT = 3500  # of those, the record's; the rest is the text


def record_block(record: dict[str, str]) -> str:
    """A version's record (its `retrain.*` values that are no tag, `tags.SHOWN`) as an HTML comment:
    kept in the description, never shown (a `--` in a value is written as JSON's `\\u002d`, so the
    comment cannot end early). Empty when there is nothing to keep."""
    return RECORD_BEGIN + json.dumps(record).replace("--", "-\\u002d") + BLOCK_END if record else ""


def record_in(description: str | None) -> dict[str, str]:
    """The record a description keeps (`record_block`); stores before kept only the evidence there
    (`<!-- retrain.evidence {...} -->`), read as the record's `retrain.evidence`."""
    text = description or ""
    for begin in (RECORD_BEGIN, EVIDENCE_BEGIN):
        _, found, rest = text.rpartition(begin)
        if found and BLOCK_END in rest:
            kept = rest.split(BLOCK_END, 1)[0]
            if begin == EVIDENCE_BEGIN:
                return {T.EVIDENCE: kept}
            try:
                record = json.loads(kept)
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}
    return {}


def with_record(description: str | None, record: dict[str, str]) -> str:
    """The description with its record block replaced by `record`: the text before it unchanged, but
    for its end when the two would pass the registry's limit (the next `describe` writes it anew)."""
    text, block = description or "", record_block(record)
    for begin in (RECORD_BEGIN, EVIDENCE_BEGIN):
        if begin in text:
            text = text.rpartition(begin)[0]
            break
    return text.rstrip("\n")[:DESCRIPTION_LIMIT - len(block) - 1] + "\n" + block


def _finite(score: float | None) -> float | None:
    return None if score is None or not math.isfinite(score) else float(score)


def gate_markdown(tags: dict[str, str], version: str) -> list[str]:
    """The gate's table on the version's page (candidate vs Production on the holdout, with its hash)
    and links to the audit run and its Evidently reports; nothing when no cycle recorded evidence."""
    try:
        seen = json.loads(tags.get(T.EVIDENCE, ""))
    except ValueError:
        return []
    if not isinstance(seen, dict):
        return []
    metric, score = seen.get("metric") or "metric", lambda x: "-" if x is None else number(x)
    lines = ["", (f"**Gate on the holdout** `{seen.get('holdout_window') or '?'}` "
                  f"(rows hashed to `{seen.get('holdout_digest') or '?'}`), both models on the same rows:"), "",
             f"| model | {metric} |", "| --- | --- |", f"| candidate v{version} | {score(seen.get('candidate'))} |"]
    if seen.get("production_version"):
        lines.append(f"| Production v{seen['production_version']} | {score(seen.get('production'))} |")
    else:
        lines.append("| Production | none yet |")
    run, experiment = seen.get("run_id"), seen.get("experiment_id")
    if run:
        reports = [f"[{REPORT_NAMES.get(p.rsplit('/', 1)[-1], p)}]({links.run(run, experiment, p)})"
                   for p in seen.get("reports") or []]
        lines += ["", f"- **Audit run:** [`{run}`]({links.run(run, experiment)})"
                  + (f"; Evidently reports: {', '.join(reports)}" if reports else "; no Evidently report this cycle")]
    return lines


def history_markdown(name: str, versions: list[Shown], limit: int = HISTORY_LIMIT) -> list[str]:
    """The last `limit` promotions, newest first (by the clock they were made at: a rollback's
    promotion is newer than the one it undoes): version, when in data time, why, and where it is now."""
    promoted = [v for v in versions if v.tags.get(T.PROMOTED_AT)]
    promoted.sort(key=lambda v: (v.tags.get(T.PROMOTED_WALL) or v.created_at.isoformat(), v.number), reverse=True)
    if not promoted:
        return ["### Production history", "", "_No version has been promoted yet._"]
    lines = [f"### Production history (last {min(limit, len(promoted))} of {len(promoted)}, newest first)", "",
             "| version | promoted as of | why | now |", "| --- | --- | --- | --- |"]
    lines += [f"| [v{v.version}]({links.model(name, v.version)}) | `{v.tags[T.PROMOTED_AT]}` | "
              f"{_cell(_why(v.tags))} | {_now(v)} |" for v in promoted[:limit]]
    return lines


def _why(tags: dict[str, str]) -> str:
    """A manual move's own reason, else the trigger and its reason, then the gate's verdict in short."""
    reason = tags.get(T.DECISION_REASON, "")
    if reason.startswith(("promote: ", "rollback: ")):
        return f"by hand, {reason}"
    why = f"`{tags[T.TRIGGER]}`: {tags.get(T.REASON, '')}" if tags.get(T.TRIGGER) else "no trigger recorded"
    try:
        seen = json.loads(tags.get(T.EVIDENCE, ""))
        if seen.get("candidate") is not None and seen.get("production") is not None:
            why += f" (gate: {seen['metric']} {number(seen['candidate'])} vs {number(seen['production'])})"
    except (ValueError, AttributeError):
        pass
    return why[:300]


def _now(version: Shown) -> str:
    if version.stage == "Production":
        return "**in Production**"
    if version.tags.get(T.ROLLED_BACK_WALL):
        return "rolled back"
    if version.tags.get(T.ARCHIVED_AT):
        return f"archived as of `{version.tags[T.ARCHIVED_AT]}`"
    return version.stage


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def model_description(current: str, history: list[str]) -> str:
    """The registered model's description with its managed block (between `BEGIN` and `END`)
    replaced by `history`; whatever a person wrote outside the block stays as it was."""
    block = padded("\n".join([BEGIN, *history, END]))
    if BEGIN in current and END in current.split(BEGIN, 1)[1]:
        before, rest = current.split(BEGIN, 1)
        return before + block + rest.split(END, 1)[1]
    return (current.rstrip() + "\n\n" if current.strip() else "") + block
