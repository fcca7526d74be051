"""One mapping of the policy file as the parsers read it, and the values every section shares.

Each error names the file and the key, and never repeats a value that may be a credential. While
`recording_reads` is open every key read is recorded: the documentation's policy reference is
derived from the parser itself (docs/gen_policy.py).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator, Mapping

from mlflow_retrain.base.errors import ConfigError

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
# MLflow refuses '/' and ':' in a registered model's name; a quote or a backslash breaks the filter
# strings the registry is searched with, '@' the `models:/name@alias` URIs, control characters the logs.
_NAME_UNSAFE = re.compile(r"[/:'\"\\@\x00-\x1f\x7f]")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: Any, key: str = "span") -> timedelta:
    """Parse a span such as `30d`, `12h`, `2w`, `90m` (the policy file's only duration syntax)."""
    match = _SPAN.match(str(text))
    if not match:
        raise ConfigError(f"{key}: {text!r} is not a span; write a number and a unit m/h/d/w, e.g. 14d")
    span = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if span <= timedelta(0):
        raise ConfigError(f"{key}: span must be positive, got {text!r}")
    return span


def check_model_name(name: str, key: str = "model_name") -> str:
    """A registered model name MLflow accepts and the registry's filter strings and URIs can carry."""
    if not name.strip() or name != name.strip():
        raise ConfigError(f"{key} {name!r} must be a name without leading or trailing spaces")
    if bad := _NAME_UNSAFE.search(name):
        raise ConfigError(f"{key} {name!r} contains {bad.group()!r}; a registered model name cannot hold "
                          "quotes, backslashes, '/', ':', '@' or control characters")
    return name


# MLflow's version columns are SQL INTEGERs: 32 bits in PostgreSQL and MySQL; a larger number overflows
# the store's query (SQLite's 64 bits too, with a traceback) instead of finding no version
MAX_VERSION = 2**31 - 1


def check_version(text: Any, key: str = "") -> str:
    """A registered model's version as a store can hold it: ASCII digits, 1 to MAX_VERSION."""
    value = str(text).strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_VERSION:
        raise ConfigError(f"{key} {value[:40]!r} is not a version number (a whole number from 1 to {MAX_VERSION})"
                          .lstrip())
    return str(int(value))


# Keys whose values may hold a credential (a Slack webhook's path is its token; a URI may carry a
# password): an error about one names the key and the value's type, never the value.
SECRET_KEYS = frozenset({"notify", "url", "tracking_uri", "uri", "secret", "ui_url"})
_WORD = re.compile(r"[a-z_]{1,24}")


def _type(value: Any) -> str:
    """A value's kind in words ("a mapping"), for messages that must not show the value."""
    if isinstance(value, bool) or value is None:  # `_NAMES` words bool as what is expected, not what was given
        return "a boolean" if value is not None else "nothing"
    return _NAMES.get(type(value), "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}")


# (section, key, kind, default) of every key a parse reads, while `recording_reads` is open: the
# documentation's policy reference is derived from the parser itself, so the two cannot drift apart
_READS: list[tuple[str, str, str, Any]] | None = None


@contextmanager
def recording_reads() -> Iterator[list[tuple[str, str, str, Any]]]:
    """Record every key the parses inside the block read (docs/gen_policy.py); parsing is unchanged."""
    global _READS
    _READS = reads = []
    try:
        yield reads
    finally:
        _READS = None


class Section:
    """Reads one mapping of the file, remembering where it is for error messages. A `secret` section
    (a notify target) never repeats a value or an unknown key in them: either may be the token.
    A trigger's or a gate check's class reads its options through it (`decide.settings.Options`)."""

    def __init__(self, raw: Any, where: str, origin: str, secret: bool = False):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{origin}: {where or 'the file'} must be a mapping, got {type(raw).__name__}")
        self.raw = dict(raw)
        self.where = where
        self.origin = origin
        self.secret = secret
        self.used: set[str] = set()

    def shown(self, name: str, value: Any) -> str:
        """The value as an error message may show it: its type only where it may be a secret (in a
        notify target, any value but a short lowercase word such as a mistyped format or event)."""
        if name in SECRET_KEYS or (self.secret and not (isinstance(value, str) and _WORD.fullmatch(value))):
            return _type(value)
        return repr(value)

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {self.key(name)} {message}")

    def has(self, name: str) -> bool:
        return name in self.raw and self.raw[name] is not None

    def read(self, name: str, kind: str, default: Any = None) -> None:
        """Mark `name` as known here (and record it while `recording_reads` is open)."""
        self.used.add(name)
        if _READS is not None:
            _READS.append((self.where, name, kind, default))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.read(name, _names(kind if isinstance(kind, tuple) else (kind,)), "required" if required else default)
        if not self.has(name):
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.raw[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(name, f"must be {_names(kinds)}, got {self.shown(name, value)}")
        return value

    def span(self, name: str, default: timedelta | None = None) -> timedelta | None:
        self.read(name, "a span", default)
        if not self.has(name):
            return default
        try:
            return parse_span(self.raw[name], self.key(name))
        except ConfigError as exc:
            raise ConfigError(f"{self.origin}: {exc}") from None

    def strings(self, name: str, required: bool = False) -> tuple[str, ...]:
        self.read(name, "a list of column names", "required" if required else [])
        value = self.get(name, list, default=[], required=required)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(name, f"must be a list of column names, got {value!r}")
        return tuple(value)

    def sub(self, name: str) -> "Section | None":
        self.read(name, "a section")
        if name not in self.raw:
            return None
        return Section(self.raw[name], self.key(name), self.origin)

    def positive(self, name: str, value: float | None) -> None:
        if value is not None and value <= 0:
            raise self.fail(name, f"must be positive, got {value}")

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used, key=str)
        if unknown:
            known = ", ".join(sorted(self.used))
            if self.secret:
                raise ConfigError(f"{self.origin}: {self.where} has {len(unknown)} key(s) that are not known here "
                                  f"(known: {known}); not repeated, as a misplaced key may hold the URL")
            raise self.fail(unknown[0], f"is not a known key (known here: {known})")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
          dict: "a mapping"}


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
