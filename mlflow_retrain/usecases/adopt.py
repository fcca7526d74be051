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


def adopt(path: Path, policy: str, triggers: TriggersConfig, cadence: timedelta | None, note: str,
          step: timedelta = timedelta(0)) -> Adoption:
    """The policy file with `policy`'s triggers, checked by loading it back (beside the file, so
    relative paths resolve alike): the triggers it yields must be the replayed ones; anything else is
    a bug here, refused before a byte is written."""
    expected = _schedule(cadence, step) if cadence is not None else triggers
    before = path.read_text()
    after = replace_triggers(before, triggers_section(expected), note)
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".probe.yaml")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(after)
        got = load_config(probe).triggers
    finally:
        Path(probe).unlink(missing_ok=True)
    if (got.configured, got.cooldown, got.debounce) != (expected.configured, expected.cooldown, expected.debounce):
        raise ConfigError(f"{path}: the rewritten triggers would not load back as {policy}; nothing written")
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
    if policy.family == "configured":
        return Adoption(name, path, text, text, "the configured policy is the file's own triggers")
    if policy.every_window:
        return Adoption(name, path, text, text, "retraining at every step is not a trigger: run `mlflow-retrain "
                                                "cycle --force` at each step instead")
    step = result.steps[1] - result.steps[0]
    note = (f"mlflow-retrain backtest --apply, {date.today().isoformat()}: {name}, mean {result.metric} "
            f"{numbers.mean():.4g} with {numbers.retrains} retrains over {len(result.steps) - 1} steps")
    if policy.cadence is not None:
        note += f" (cycles every {format_span(step)})"
    return adopt(path, name, policy.config.triggers, policy.cadence, note, step)


def check_apply(path: Path, name: str, known: list[str]) -> None:
    """Before the backtest runs: a policy `--apply` can name, a file it can write."""
    if name != RECOMMENDED and name not in known and not name.startswith("every-"):
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

