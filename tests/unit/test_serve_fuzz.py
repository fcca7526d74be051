"""Property-based fuzzing of `serve`'s endpoints (issue 26 item 4): whatever a client sends (any
method and path, header values with Unicode digits and 5,000-digit numbers, query strings, bodies of
random bytes, JSON of the wrong shape, well signed payloads with wrong fields), the answer is never
5xx, and a refusal is a short JSON error and exactly one log line, never a traceback.

Requests go to the real Starlette app (its routing, header decoding, query and body parsing, a real
sqlite queue) through its ASGI interface with the raw bytes drawn here: starlette's TestClient
re-encodes header values as UTF-8, so it cannot send the byte 0xB2 that http.client sends for `²`.
The worker is not started (no lifespan), so accepted events stay queued and /healthz answers 503
"worker down": the one 5xx allowed, and only there. tests/integration/test_serve.py sends the issue's
cases over real HTTP to a real `serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlflow_retrain.serve.app import Settings, create_app
from mlflow_retrain.base.signing import DELIVERY_ID, SIGNATURE, TIMESTAMP, signed_headers

SECRET = "fuzz-secret-0123456789abcdef"
MAX_BODY = 16 * 1024
ROUTES = [("POST", "/webhook"), ("POST", "/trigger"), ("GET", "/healthz"), ("GET", "/events")]
ODD = "²³¹٣१߃\u00a0\u2028\ud800\x00\n\"\\"  # Unicode digits, odd spaces, a lone surrogate, controls


class Records(logging.Handler):
    """Every log record of one request."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def send(app, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
               body: bytes) -> tuple[int, bytes]:
    """One request through the app's ASGI interface, as uvicorn hands it over (body in two chunks)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": quote(path).encode(), "query_string": query, "root_path": "",
             "headers": [(name.lower(), value) for name, value in headers], "client": ("127.0.0.1", 40000),
             "server": ("127.0.0.1", 8765)}
    half = len(body) // 2
    incoming = [{"type": "http.request", "body": body[:half], "more_body": True},
                {"type": "http.request", "body": body[half:], "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def reply(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, reply)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def latin1_or_utf8(text: str) -> bytes:
    """A header value as a client puts it on the wire: http.client sends latin-1, curl sends UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


header_values = st.one_of(
    st.text("0123456789²³¹", min_size=1, max_size=14).map(latin1_or_utf8),
    st.text("0123456789", min_size=13, max_size=5000).map(str.encode),  # 5,000 digits: past int()'s limit
    st.text(st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=40).map(latin1_or_utf8),
    st.binary(max_size=60).map(lambda b: b.translate(None, b"\r\n")),  # no line breaks on the wire
    st.sampled_from([b"", b" ", b"v1,", b"v1,AAAA v1,BBBB", b"-1", b"1e9", b"0x10", b"99999999999999"]),
)
names = st.text(st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | names,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4), max_leaves=12)
webhook_like = st.fixed_dictionaries(
    {"entity": st.sampled_from(["model_version", "model_version_tag", "registered_model"]) | json_values,
     "action": st.sampled_from(["created", "set", "deleted"]) | json_values,
     "data": st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["bikes", "other"]) | json_values,
        "version": st.sampled_from(["1", "²", "007", "9" * 30, 3, -1, 2.5]) | json_values,
        "key": st.sampled_from(["retrain.approval", "retrain.cycle_run_id", "owner"]) | json_values,
        "value": st.sampled_from(["approved", " REJECTED ", "maybe"]) | json_values,
        "tags": st.dictionaries(names, json_values, max_size=3) | json_values}) | json_values},
    optional={"timestamp": json_values})
trigger_fields = {"source": st.sampled_from(["etl", " nightly-etl ", "a" * 257, "two\nlines"]) | names | json_values,
                  "reason": st.sampled_from(["table reloaded", "x" * 8001]) | names | json_values}
trigger_like = st.fixed_dictionaries(trigger_fields) | st.fixed_dictionaries({}, optional=trigger_fields)
SHAPED = {"/webhook": webhook_like, "/trigger": trigger_like}


def dumped(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(dumped),
    st.sampled_from([b"[" * 50_000, b"1" * 5000, b'{"a": 1, "a": 2}', b'{"source": "x", "reason": NaN}',
                     b'{"source": "x", "reason": "\\ud800"}', b'{"source": "x", "reason": 1e999}',
                     b"\xff\xfe{}", b"x" * (MAX_BODY + 1)]),
)
queries = st.one_of(
    st.just(b""),
    header_values.map(lambda v: b"limit=" + v),
    st.text(st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=20).map(
        lambda v: b"limit=" + quote(v, errors="surrogatepass").encode()),
    st.lists(st.tuples(st.sampled_from(["limit", "x", ""]), st.sampled_from(["1", "50", "1000", "0", "1001"])),
             max_size=3).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode()),
    st.binary(max_size=40),
)


@st.composite
def requests(draw) -> tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]:
    if draw(st.integers(0, 9)):  # mostly the four routes, where the parser works
        method, path = draw(st.sampled_from(ROUTES))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
        path = draw(st.sampled_from([r[1] for r in ROUTES] + ["/", "/events/", "/%C2%B2"]) | names.map("/{}".format))
    # a body of the route's shape (signed or not, fields right or wrong) half the time
    body = dumped(draw(SHAPED[path])) if path in SHAPED and draw(st.booleans()) else draw(bodies)
    delivery = draw(st.sampled_from([None, None, "fixed-delivery"]))  # a fixed id is a replay after its first use
    signing = {k.encode(): v.encode() for k, v in signed_headers(SECRET, body, delivery_id=delivery).items()}
    if not draw(st.integers(0, 2)):  # mostly signed properly, else not at all or with one header changed
        signing = {} if draw(st.booleans()) else {**signing, draw(st.sampled_from(
            [DELIVERY_ID, TIMESTAMP, SIGNATURE])).encode(): draw(header_values)}
    headers = [*signing.items(), (b"content-length", str(len(body)).encode())]
    if not draw(st.integers(0, 3)):  # sometimes a header more: a signing header twice, a second length, a host
        headers += draw(st.lists(st.tuples(st.sampled_from([DELIVERY_ID.encode(), TIMESTAMP.encode(),
                                                            SIGNATURE.encode(), b"content-length", b"content-type",
                                                            b"host"]), header_values), min_size=1, max_size=2))
    return method, path, b"" if draw(st.integers(0, 3)) else draw(queries), headers, body


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-fuzz")
    return create_app(Settings(config_path=folder / "retrain.yaml", model="bikes", secret=SECRET, state_dir=folder,
                               max_body=MAX_BODY))


@pytest.fixture(scope="module")
def records():
    handler = Records()
    logging.getLogger().addHandler(handler)
    logging.getLogger("mlflow_retrain.serve").setLevel(logging.INFO)  # as `serve` runs
    yield handler
    logging.getLogger().removeHandler(handler)
    logging.getLogger("mlflow_retrain.serve").setLevel(logging.NOTSET)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(sent=requests())
def test_no_request_gets_a_5xx_or_a_traceback_and_a_refusal_logs_one_line(app, records, sent):
    """About 300 requests in 5-9 s; `--hypothesis-show-statistics` shows which answers they got."""
    records.records.clear()
    method, path, query, headers, body = sent
    status, answer = asyncio.run(send(app, method, path, query, headers, body))
    event(f"{method} {path} -> {status}" if (method, path) in ROUTES else f"elsewhere -> {status}")  # coverage
    logged = records.records
    assert not [r for r in logged if r.exc_info or "Traceback" in r.getMessage()], logged
    assert all("\n" not in r.getMessage() and len(r.getMessage()) < 1000 for r in logged), logged
    if path == "/healthz" and status == 503:
        assert json.loads(answer)["status"] == "worker down"
    else:
        assert status < 500, (status, answer, [r.getMessage() for r in logged])
    if (method, path) in ROUTES and status in (400, 401, 409, 413):
        assert len(logged) == 1 and logged[0].levelno == logging.WARNING, [r.getMessage() for r in logged]
        error = json.loads(answer)["error"]
        assert 0 < len(error) <= 300 and SECRET not in error
    else:
        assert len(logged) <= 1, [r.getMessage() for r in logged]


def test_an_unexpected_failure_is_a_500_and_one_log_line(tmp_path: Path, records):
    """The net under the parser: a queue that is no database (a real sqlite error in a handler) is
    answered 500 with a short JSON error and logged in one line, not a traceback per request."""
    app = create_app(Settings(config_path=tmp_path / "retrain.yaml", model="bikes", secret=SECRET,
                              state_dir=tmp_path))
    (tmp_path / "queue.sqlite").write_bytes(b"not a database" * 100)
    for name in ("queue.sqlite-wal", "queue.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    records.records.clear()
    status, answer = asyncio.run(send(app, "GET", "/events", b"limit=5", [], b""))
    assert status == 500 and json.loads(answer) == {"error": "internal error (see the server's log)"}
    [record] = records.records
    assert record.getMessage().startswith("GET /events failed: DatabaseError: file is not a database")
    assert not record.exc_info
    body = json.dumps({"source": "etl", "reason": "x"}).encode()
    records.records.clear()
    status, _ = asyncio.run(send(app, "POST", "/trigger", b"", [
        (k.encode(), v.encode()) for k, v in signed_headers(SECRET, body, now=time.time()).items()], body))
    assert status == 500 and len(records.records) == 1
