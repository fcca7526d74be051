"""`notify:` and `ui_url:` of the policy file: webhooks, their URLs and signing secrets, checked
without ever repeating a value that may be a token.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.policy.config import NOTIFY_EVENTS, NOTIFY_FORMATS, NOTIFY_SCHEMES, NotifyTarget
from mlflow_retrain.policy.section import Section

MIN_SECRET = 16  # characters: a short signing secret is guessable offline from one signed request


def notify_targets(raw: Any, origin: str, source: Path | None) -> tuple[NotifyTarget, ...]:
    """`notify:` a list of webhooks. Every problem is found here, before a cycle runs: a URL that is
    not http(s), an unknown format or event, a secret written inline (it would sit in the repository),
    one whose variable or file is missing or too short to resist guessing. The URL may be the token,
    so it may come from a variable or a file too, and no message here ever repeats it."""
    targets = []
    for i, item in enumerate(raw):
        if isinstance(item, Mapping) and True in item:  # YAML 1.1 reads a bare `on:` key as true
            item = {("on" if k is True else k): v for k, v in item.items()}
        s = Section(item, f"notify[{i}]", origin, secret=True)
        url = _notify_url(s, source)
        fmt = s.get("format", str, "json")
        if fmt not in NOTIFY_FORMATS:
            raise s.fail("format", f"must be one of {', '.join(NOTIFY_FORMATS)}, got {s.shown('format', fmt)}")
        events = tuple(s.get("on", list, list(NOTIFY_EVENTS)))
        unknown = [e for e in events if e not in NOTIFY_EVENTS]
        if unknown:
            raise s.fail("on", f"names unknown event {s.shown('on', unknown[0])}; events: {', '.join(NOTIFY_EVENTS)}")
        if not events:
            raise s.fail("on", f"is empty: leave it out for every event ({', '.join(NOTIFY_EVENTS)})")
        s.read("secret", "refused")
        if s.has("secret"):
            raise s.fail("secret", "must not be written in the policy: name an environment variable "
                                   "(secret_env: NAME) or a file (secret_file: PATH) that holds it")
        secret_env, secret_file = s.get("secret_env", str), s.get("secret_file", str)
        if secret_env and secret_file:
            raise s.fail("secret_env", "and secret_file are alternatives: give one")
        secret = _from_env(s, "secret_env") if secret_env else ""
        path = None
        if secret_file:
            path = _beside(secret_file, source)
            secret = _read_text(path)
            if not secret:
                raise s.fail("secret_file", "names a file that does not exist or is empty (a relative path is "
                                            "beside the policy; not repeated, as it may be the secret itself)")
        if secret and len(secret) < MIN_SECRET:
            name = "secret_env" if secret_env else "secret_file"
            raise s.fail(name, f"holds a secret shorter than {MIN_SECRET} characters: use a random one, e.g. "
                               "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        timeout = s.get("timeout", float, NotifyTarget.timeout)
        s.positive("timeout", timeout)
        s.done()
        targets.append(NotifyTarget(url=url, format=fmt, events=tuple(dict.fromkeys(events)),
                                    secret_env=secret_env, secret_file=path, timeout=timeout))
    return tuple(targets)


def ui_url(s: Section) -> str | None:
    """`ui_url:` the MLflow UI's address, without credentials (it is written into messages)."""
    url = s.get("ui_url", str)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in NOTIFY_SCHEMES or not parts.hostname or "@" in parts.netloc or parts.query:
        raise s.fail("ui_url", "must be an http:// or https:// URL with a host and no credentials or query, "
                               "e.g. https://mlflow.example.com")
    return url.rstrip("/")


def _beside(name: str, source: Path | None) -> Path:
    """A path from the policy: relative ones are beside the policy file."""
    path = Path(name).expanduser()
    return source.parent / path if not path.is_absolute() and source is not None else path


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _from_env(s: Section, key: str) -> str:
    """The value of the variable `key` names. A value that is no variable name is likely the secret
    itself, written where its name belongs: refused without repeating it."""
    name = s.get(key, str)
    if not _ENV_NAME.fullmatch(name):
        raise s.fail(key, "must name an environment variable (letters, digits, _); what is written is not a name "
                          "and is not repeated, as it may be the secret itself")
    value = os.environ.get(name, "").strip()
    if not value:
        raise s.fail(key, f"names {name}, which is not set (or empty) in the environment")
    return value


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _notify_url(s: Section, source: Path | None) -> str:
    """A target's URL: written in the policy (`url`), or named (`url_env`, `url_file`) so the token
    stays out of the repository. Checked without ever being shown."""
    given = [key for key in ("url", "url_env", "url_file") if s.has(key)]
    for key in ("url", "url_env", "url_file"):
        s.read(key, "a string")
    if len(given) != 1:
        raise s.fail("url", "is required: give one of url, url_env (a variable holding it) or url_file (a file "
                            "holding it)" if not given else f"has alternatives: give one of {', '.join(given)}")
    key = given[0]
    name = s.get(key, str)
    if key == "url":
        url, origin = name, "url"
    elif key == "url_env":
        url, origin = _from_env(s, "url_env"), f"url_env ({name})"
    else:
        url, origin = _read_text(_beside(name, source)), "url_file"
        if not url:
            raise s.fail("url_file", "names a file that does not exist or is empty (a relative path is beside the "
                                     "policy; not repeated, as it may be the URL itself)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{s.origin}: {s.where}.{origin} is not a URL (not repeated: it may hold a token)") from None
    if parts.scheme not in NOTIFY_SCHEMES or not parts.hostname:
        raise ConfigError(f"{s.origin}: {s.where}.{origin} must be an http:// or https:// URL with a host")
    return url
