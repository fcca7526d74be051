"""The fleet's pure decisions, over plain data: which exit code a fleet run ends with, which models a
`--select` keeps, how a fleet file's defaults combine with a model's entry, which policies clash.

Kept apart from the pool and the registry so each rule is a unit test, not an integration run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from mlflow_retrain.base.errors import FleetError

# Exit codes from the least to the most worrying (cli.py documents them). The order answers "how much
# do we *not* know about some model": 3 is another cycle at work on it (its own run reports), 4 is
# downtime that was found and reported, 2 is a model nobody looked at because its policy or data is
# wrong, 1 a model whose run crashed (a bug, or its worker process died).
SEVERITY = (0, 3, 4, 2, 1)
OUTCOME_OF_CODE = {1: "failed", 2: "error", 3: "lease_held", 4: "downtime"}


def fleet_exit_code(codes: Iterable[int]) -> int:
    """The fleet's exit code: its worst model's (an unknown code counts as a crash)."""
    return max(codes, key=lambda c: SEVERITY.index(c) if c in SEVERITY else len(SEVERITY), default=0)


def parse_selectors(texts: Sequence[str]) -> dict[str, str]:
    """`--select retrain.enabled=true` (repeatable; all must hold) as {tag: value}."""
    wanted: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise FleetError(f"--select {text!r} must be TAG=VALUE, e.g. --select retrain.enabled=true")
        if wanted.get(key.strip(), value.strip()) != value.strip():
            raise FleetError(f"--select gives tag {key.strip()!r} two values; a model carries one")
        wanted[key.strip()] = value.strip()
    return wanted


def selected(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether a registered model carrying `tags` is in the fleet's selection: every wanted tag, with
    its value (values compare without case, so `True` set in the UI matches `true`)."""
    return all(key in tags and tags[key].strip().lower() == value.lower() for key, value in wanted.items())


def merge(defaults: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet file's model entry over its `defaults:`: mappings merge key by key at every depth, any
    other value (a list, a number) in the entry replaces the default whole, as in YAML's `<<:` but deep,
    so `data: {path: north.csv}` keeps the shared timestamp and target."""
    out = dict(defaults)
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def clashes(named: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The registered model names given by more than one policy, with those policies, from
    (policy label, model name) pairs. Two policies on one model would take turns at its lease and
    undo each other's decisions; the fleet's table and dashboard are keyed by model name too."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for label, name in named:
        by_name[name].append(label)
    return {name: labels for name, labels in by_name.items() if len(labels) > 1}


def refuse_clashes(named: Iterable[tuple[str, str]]) -> None:
    """One line, before anything runs, when two policies name one registered model."""
    found = clashes(named)
    if found:
        name, labels = next(iter(found.items()))
        more = f" (and {len(found) - 1} more model(s) named twice)" if len(found) > 1 else ""
        raise FleetError(f"registered model {name!r} is named by {len(labels)} policies: {', '.join(labels)}; "
                         f"one policy per model{more}")


def folder_names(names: Sequence[str]) -> dict[str, str]:
    """A folder name per model for its own dashboard: the name with what a path cannot hold replaced,
    made unique (`a b` and `a-b` both read `a-b`, so the second becomes `a-b-2`)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
        slug, n = base, 1
        while slug.lower() in taken:  # case-insensitive file systems would merge `A` and `a`
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug.lower())
        out[name] = slug
    return out


def age(promoted_at: str | None, at: str | None) -> timedelta | None:
    """How long Production has served, in data time (its `retrain.promoted_at` to the command's data
    time), like cooldowns and `approval_ttl`; None when either end is unknown."""
    if not promoted_at or not at:
        return None
    try:
        start, end = datetime.fromisoformat(promoted_at), datetime.fromisoformat(at)
    except ValueError:
        return None
    return max(end.replace(tzinfo=None) - start.replace(tzinfo=None), timedelta(0))


def format_age(span: timedelta | None) -> str | None:
    """`12d`, `5h`: whole days from a day up, whole hours below."""
    if span is None:
        return None
    hours = span.total_seconds() / 3600
    return f"{int(hours // 24)}d" if hours >= 24 else f"{int(hours)}h"
