"""Adopt a policy the backtest measured: write its triggers into the policy file (`backtest --apply`).

Why it is built this way: docs/design.md#usecases-adopt.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlflow_retrain.usecases.backtest import BacktestResult
from mlflow_retrain.usecases.search import Variant
from mlflow_retrain.policy.config import TriggersConfig
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.decide.verdicts import format_span
from mlflow_retrain.base.errors import ConfigError

RECOMMENDED = "recommended"
_TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


@dataclass(frozen=True)
class Adoption:
    """The policy file before and after adopting `policy`; `changed` is False when they are equal."""

    policy: str
    path: Path
    before: str
    after: str
    why: str = ""  # when nothing is written: why not

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
                                            f"{self.path} (now)", f"{self.path} (with {self.policy})"))

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "path": str(self.path), "changed": self.changed, "diff": self.diff(),
                "why": self.why}


def triggers_section(triggers: TriggersConfig) -> dict[str, Any]:
    """Triggers as `retrain.yaml` writes them (options at their defaults left out)."""
    section = {t.name: _options(t.options) for t in triggers.configured}
    if triggers.cooldown is not None:
        section["cooldown"] = format_span(triggers.cooldown)
    if triggers.debounce is not None:
        section["debounce"] = _options(triggers.debounce)
    return section


def _options(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_span(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _options(v) for f in dataclasses.fields(value)
                if (v := getattr(value, f.name)) is not None and v != f.default}
    return value


def replace_triggers(text: str, section: dict[str, Any], note: str) -> str:
    """`text` with its top-level `triggers:` block (the key's line and the lines indented under it)
    replaced by `section`; comment and blank lines that close the block stay, as they introduce the
    next key. Without a `triggers:` key the block is appended."""
    # one line per trigger, its options in flow style: `metric_threshold: {max: 80}`
    body = "".join(f"  {k}: {_flow(v)}\n" for k, v in section.items())
    block = f"triggers:{'' if section else ' {}'}  # {note}\n{body}"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^triggers\s*:", line)), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + block
    end = start + 1
    while end < len(lines) and not _TOP_LEVEL_KEY.match(lines[end]):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _flow(value: Any) -> str:
    """One YAML value on one line (a plain scalar's dump ends with a document-end marker)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).removesuffix("...\n").strip()


def set_key(text: str, section: str, key: str, value: Any, note: str) -> str:
    """`text` with `section.key` set: its line replaced in place, else added first under the
    section (at the block's indentation), else the section appended. Comments elsewhere stay."""
    line = f"{key}: {_flow(value)}  # {note}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, text_line in enumerate(lines) if re.match(rf"^{section}\s*:", text_line)), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + f"{section}:\n  {line}"
    end = start + 1
    while end < len(lines) and not _TOP_LEVEL_KEY.match(lines[end]):
        end += 1
    indent = next((m.group(1) for m in (re.match(r"^(\s+)[^\s#]", x) for x in lines[start + 1:end]) if m), "  ")
    at = next((i for i in range(start + 1, end) if re.match(rf"^{indent}{key}\s*:", lines[i])), None)
    if at is None:
        lines.insert(start + 1, indent + line)
    else:
        lines[at] = indent + line
    return "".join(lines)


def adopt(path: Path, policy: str, triggers: TriggersConfig | None, cadence: timedelta | None, note: str,
          step: timedelta = timedelta(0), variant: Variant | None = None) -> Adoption:
    """The policy file with `policy`'s triggers (None: the file's own) and `variant`'s training or
    gate keys, checked by loading it back (beside the file, so relative paths resolve alike): it must
    yield the replayed triggers and values; anything else is a bug here, refused before a byte is written."""
    expected = _schedule(cadence, step) if cadence is not None else triggers
    before = path.read_text()
    after = before if expected is None else replace_triggers(before, triggers_section(expected), note)
    for section, values in (variant.keys() if variant else {}).items():
        for key, value in values.items():
            after = set_key(after, section, key, value, note)
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".probe.yaml")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(after)
        got = load_config(probe)
    finally:
        Path(probe).unlink(missing_ok=True)
    same = expected is None or (got.triggers.configured, got.triggers.cooldown, got.triggers.debounce) == (
        expected.configured, expected.cooldown, expected.debounce)
    if variant is not None:
        same = same and all(getattr(got.training, k) == v for k, v in variant.training) and all(
            getattr(got.validation, k) == v for k, v in variant.validation)
    if not same:
        raise ConfigError(f"{path}: the rewritten policy would not load back as {policy}; nothing written")
    return Adoption(policy, path, before, after)


def _schedule(cadence: timedelta, step: timedelta) -> TriggersConfig:
    """A replayed schedule as triggers, for cycles `step` apart: due at the step `cadence` after
    training, and not again within `cadence` of the last candidate, whatever the gate said."""
    from mlflow_retrain.decide.triggers.max_age import MaxAge

    return TriggersConfig(configured=(MaxAge(max(cadence - step, step / 2)),), cooldown=cadence)


def from_backtest(path: Path, result: BacktestResult, name: str) -> Adoption:
    """The policy file with the backtest's policy `name` (`recommended`: the recommendation)."""
    name = result.recommended if name == RECOMMENDED else name
    found = [(s, c) for s, c in zip(result.states, result.candidates()) if s.policy.name == name]
    if not found:
        raise ConfigError(f"--apply {name}: no such policy in this backtest; choose from "
                          + ", ".join(s.policy.name for s in result.states))
    state, numbers = found[0]
    policy, text = state.policy, path.read_text()
    variant = result.search.variants.get(name) if result.search is not None else None
    if policy.family == "configured" and variant is None:
        return Adoption(name, path, text, text, "the configured policy is the file's own triggers")
    if policy.every_window:
        return Adoption(name, path, text, text, "retraining at every step is not a trigger: run `mlflow-retrain "
                                                "cycle --force` at each step instead")
    step = result.steps[1] - result.steps[0]
    note = (f"mlflow-retrain backtest --apply, {date.today().isoformat()}: {name}, mean {result.metric} "
            f"{numbers.mean():.4g} with {numbers.retrains} retrains over {len(result.steps) - 1} steps")
    if policy.cadence is not None:
        note += f" (cycles every {format_span(step)})"
    triggers = None if policy.family == "configured" else policy.config.triggers
    return adopt(path, name, triggers, policy.cadence, note, step, variant)


def check_apply(path: Path, name: str, known: list[str], searched: bool = False) -> None:
    """Before the backtest runs: a policy `--apply` can name (with `--search`, a variant `policy/value`
    of one), a file it can write."""
    base = name.split("/", 1)[0] if searched else name
    if name != RECOMMENDED and base not in known and not base.startswith("every-"):
        raise ConfigError(f"--apply {name}: no such policy; choose from {RECOMMENDED}, " + ", ".join(known))
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{path}: --apply cannot write the policy file (or its folder): check its permissions")


def write(adoption: Adoption) -> None:
    """Replace the file in one rename: a crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=adoption.path.parent, prefix=f".{adoption.path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(adoption.after)
        os.chmod(tmp, adoption.path.stat().st_mode & 0o7777)
        os.replace(tmp, adoption.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

