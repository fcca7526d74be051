"""One strict parser for everything a request to `serve` carries, run by every endpoint before any work.

Anyone who can reach the port can send anything, and MLflow retries a delivery answered 5xx, so
nothing a request carries may reach a handler unchecked: `str.isdigit()` accepts `²` that `int()`
refuses, `int()` refuses 4,300 digits, `hmac.compare_digest` refuses non-ASCII text, `json.loads`
recurses once per `[`. Here numbers are ASCII digits of bounded length, names and signatures are
bounded ASCII, query strings and bodies are bounded in size, a body is UTF-8 JSON whose object has
the shape its endpoint reads. Whatever fails raises `Refused`: the app answers its status (400
malformed, 401 unsigned or stale, 409 replayed, 413 too large) with a short JSON error and one log line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from mlflow_retrain.base.signing import DELIVERY_ID, SIGNATURE, TIMESTAMP

MAX_QUERY = 1024  # bytes of query string: /events?limit=N needs a dozen
MAX_QUERY_FIELDS = 8
TIMESTAMP_DIGITS = 12  # whole Unix seconds up to the year 33658
MAX_SIGNATURE_HEADER = 1024  # a few space-separated `v1,<44 base64>` values while a secret rotates
MAX_JSON_NUMBER = 40  # characters of one JSON number: MLflow sends none longer than a timestamp
MAX_NAME = 256  # a model name, tag key, entity, action or source
MAX_REASON = 8000  # a trigger's reason: MLflow's limit for a run tag, where it is recorded
MAX_TAG_VALUE = 100_000  # MLflow's limit for a registry tag value (a cycle's JSON tags are long)
REASON_SHOWN = 300  # characters of a refusal's reason in the answer and the log line

_DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # MLflow sends a UUID
_SIGNATURE = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces: `v1,<base64>`
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Refused(ValueError):
    """A request refused before any work: answered `status` with `reason`, logged in one line."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status

    @property
    def reason(self) -> str:
        return one_line(str(self))


def one_line(text: str, limit: int = REASON_SHOWN) -> str:
    """`text` fit for one log line and a short error: control characters escaped, cut at `limit`."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def whole_number(text: str, name: str, low: int, high: int) -> int:
    """`text` as an int in [low, high]: ASCII digits only, no more of them than `high` has."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))) or not low <= int(text) <= high:
        raise Refused(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def query(raw: bytes, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The query string `raw` (as sent) as {name: parsed value}: bounded, UTF-8, each name at most
    once and known to the endpoint (`allowed` maps it to its parser)."""
    if len(raw) > MAX_QUERY:
        raise Refused(f"query string over {MAX_QUERY} bytes")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:  # non-ASCII bytes, escapes that are not UTF-8, too many fields
        raise Refused("query string is not a short, UTF-8, percent-encoded list of name=value") from None
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise Refused(f"unknown query parameter {name!r} (this endpoint takes: {known})")
        if name in seen:
            raise Refused(f"query parameter {name!r} given twice")
        seen[name] = allowed[name](value)
    return seen


@dataclass(frozen=True)
class SigningHeaders:
    """MLflow's three signing headers, each checked for form (not yet for the signature itself)."""

    delivery_id: str
    timestamp: str  # as sent: ASCII digits, what the signature covers
    signatures: tuple[str, ...]

    @property
    def seconds(self) -> int:
        return int(self.timestamp)


def signing_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> SigningHeaders:
    """The signing headers of a request (name -> value, or the (name, value) pairs as sent): each
    present once and well formed, else `Refused` 401 (a signature that cannot be read is not one)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        found.setdefault(name.lower(), []).append(value.strip())
    values = {}
    for name in (DELIVERY_ID, TIMESTAMP, SIGNATURE):
        sent = [v for v in found.get(name.lower(), []) if v]
        if not sent:
            raise Refused(f"missing {DELIVERY_ID}, {TIMESTAMP} or {SIGNATURE} header", 401)
        if len(sent) > 1:
            raise Refused(f"{name} header sent {len(sent)} times", 401)
        values[name] = sent[0]
    delivery_id, timestamp, signature = values[DELIVERY_ID], values[TIMESTAMP], values[SIGNATURE]
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise Refused(f"{DELIVERY_ID} must be 1 to 128 letters, digits or ._:- (MLflow sends a UUID)", 401)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= TIMESTAMP_DIGITS):
        raise Refused(f"{TIMESTAMP} must be whole Unix seconds (at most {TIMESTAMP_DIGITS} ASCII digits)", 401)
    signatures = tuple(signature.split())
    if len(signature) > MAX_SIGNATURE_HEADER or not all(_SIGNATURE.fullmatch(s) for s in signatures):
        raise Refused(f"{SIGNATURE} must be space-separated v1,<base64> values", 401)
    return SigningHeaders(delivery_id, timestamp, signatures)


def content_length(value: str | None, limit: int) -> None:
    """A declared body size: ASCII digits, refused with 413 past `limit` before anything is read."""
    if value is None:
        return
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        raise Refused("Content-Length must be a whole number of bytes")
    if int(value) > limit:
        raise Refused(f"body over {limit} bytes", 413)


def json_object(body: bytes) -> dict[str, Any]:
    """`body` as a JSON object: UTF-8, no duplicate keys, no NaN or Infinity, no number longer than
    `MAX_JSON_NUMBER` characters, nesting Python can parse, no lone surrogate."""
    try:
        payload = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_int=_int,
                             parse_float=_float, parse_constant=_constant)
        # a lone surrogate escape ("\\ud800") is valid JSON but no text: sqlite and the log refuse it later
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise Refused("body is not JSON: nested too deeply") from None
    except UnicodeEncodeError:
        raise Refused("body is not JSON text: a \\u escape names half a character") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and the hooks' refusals are ValueErrors
        raise Refused(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Refused("body must be a JSON object")
    return payload


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    payload = dict(pairs)
    if len(payload) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return payload


def _int(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_JSON_NUMBER:
        raise ValueError(f"a number of {len(text)} characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def _constant(text: str) -> None:
    raise ValueError(f"{text} is not a JSON number")


def string_field(payload: Mapping[str, Any], key: str, where: str, *, limit: int = MAX_NAME,
                 required: bool = False, blank: bool = True) -> str | None:
    """`payload[key]` as a string of at most `limit` characters (None when absent and not `required`)."""
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > limit or (not blank and not value.strip()):
        kind = "non-empty " if not blank else ""
        raise Refused(f"{where} needs {key!r} to be a {kind}string of at most {limit} characters")
    return value


def webhook_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An MLflow webhook delivery (`{"entity", "action", "timestamp", "data": {...}}`, `data` one of
    `mlflow.webhooks.types`), with the type of every field `serve` reads checked."""
    where = "an MLflow webhook"
    string_field(payload, "entity", where, required=True)
    string_field(payload, "action", where, required=True)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise Refused(f"{where} needs 'data' to be an object")
    for key in ("name", "key"):
        string_field(data, key, f"{where}'s data")
    string_field(data, "value", f"{where}'s data", limit=MAX_TAG_VALUE)
    version = data.get("version")
    if version is not None and not (isinstance(version, str) and len(version) <= MAX_NAME
                                    or type(version) is int and version >= 0):
        raise Refused(f"{where}'s data needs 'version' to be a version number")
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, dict) and all(
            len(k) <= MAX_NAME and isinstance(v, str) and len(v) <= MAX_TAG_VALUE for k, v in tags.items())):
        raise Refused(f"{where}'s data needs 'tags' to be an object of tag name to string")
    return payload


def trigger_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A `POST /trigger` body: non-empty strings `source` (a name, one line) and `reason`."""
    try:
        source = string_field(payload, "source", "/trigger", required=True, blank=False)
        string_field(payload, "reason", "/trigger", limit=MAX_REASON, required=True, blank=False)
        if _CONTROL.search(source):
            raise Refused("/trigger needs 'source' on one line")
    except Refused as exc:
        raise Refused(f'{exc}: the system that asks and why, e.g. {{"source": "nightly-etl", '
                      '"reason": "table sales reloaded"}') from None
    return payload


def version_number(value: Any) -> str | None:
    """A model version number as MLflow writes it (ASCII digits, str or int), else None."""
    digits = str(value) if type(value) is int else value
    if isinstance(digits, str) and digits.isascii() and digits.isdigit() and len(digits) <= 18:
        return digits
    return None
