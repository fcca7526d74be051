"""Secrets never printed: credentials in URIs are masked in every line the tool writes or forwards."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from mlflow_retrain.base.redact import RedactingStream, install_log_filter, redact, scrub
from mlflow_retrain.adapters.streams import redacted_output, tail_of_output


@pytest.mark.parametrize("text, expected", [
    ("🏃 View run cycle at: http://user:s3cret@127.0.0.1:5000/#/experiments/1/runs/ab",
     "🏃 View run cycle at: http://***@127.0.0.1:5000/#/experiments/1/runs/ab"),
    ("API request to https://u:p@ss@host:443/api/2.0/mlflow/runs/get failed",  # an unencoded @ in the password
     "API request to https://***@host:443/api/2.0/mlflow/runs/get failed"),
    ("git+https://ghp_TOKEN@github.com/org/repo.git", "git+https://***@github.com/org/repo.git"),
    ("https://h/a?x=1&token=abc&access_token=d&Password=e&sig=f%2Bg#frag",
     "https://h/a?x=1&token=***&access_token=***&Password=***&sig=***#frag"),
    ("s3://bucket/key?X-Amz-Signature=abc&X-Amz-Credential=k", "s3://bucket/key?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("'http://a:b@h:1'", "'http://***@h:1'"),
])
def test_credentials_in_uris_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "http://127.0.0.1:5000/#/experiments/1", "sqlite:///tmp/mlflow.db", "mlflow-artifacts:/1/abc/artifacts",
    "models:/bikes/Production", "user@example.com wrote exit code=2, key=mae", "",
])
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text


def test_credential_values_from_the_environment_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:p%40ssw0rd@tracking:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123456")
    said = redact("auth failed for p@ssw0rd / p%40ssw0rd with bearer tok-123456; user alice")
    assert "ssw0rd" not in said and "tok-123456" not in said and "alice" in said  # a user name is no secret


def test_a_stream_masks_lines_even_when_a_uri_arrives_in_pieces():
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("View run at: http://user:s3")
    assert out.getvalue() == ""  # held until the line ends
    stream.write("cret@h:1/#/runs/1\nnext ")
    stream.flush()
    assert out.getvalue() == "View run at: http://***@h:1/#/runs/1\nnext "


def test_log_records_of_mlflow_and_our_loggers_are_masked(monkeypatch):
    install_log_filter()
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)  # a handler set up after the filter: the record factory covers it
    for name in ("mlflow.tracking.fluent", "mlflow_retrain.loop.cycle"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", False)
        monkeypatch.setattr(logger, "handlers", [handler])
        monkeypatch.setattr(logger, "level", logging.INFO)
        logger.info("View run %s at: %s", "x", "http://user:s3cret@h:1/#/runs/1")
    assert "s3cret" not in seen.getvalue() and seen.getvalue().count("http://***@h:1") == 2


def test_an_exception_message_and_its_causes_are_scrubbed():
    try:
        try:
            raise ConnectionError("to http://u:s3cret@h:1 refused")
        except ConnectionError:
            raise RuntimeError("API request to http://u:s3cret@h:1/api failed")
    except RuntimeError as exc:
        scrub(exc)
        assert "s3cret" not in str(exc) and "s3cret" not in str(exc.__context__)


def test_python_writes_and_child_output_are_masked_while_forwarded(capfd):
    with redacted_output():
        print("🏃 View run r at: http://user:s3cret@h:1/#/runs/1")
        print("warn http://user:s3cret@h:2", file=sys.stderr)
        with tail_of_output() as tail:
            subprocess.run([sys.executable, "-c", "print('child at http://user:s3cret@h:3/x?token=abc')"], check=True)
    out, err = capfd.readouterr()
    assert "s3cret" not in out + err and "abc" not in err
    assert "http://***@h:1" in out and "http://***@h:2" in err and "http://***@h:3/x?token=***" in err
    assert list(tail) == ["child at http://***@h:3/x?token=***"]


def test_the_cli_error_line_masks_the_password_of_an_unreachable_server(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    policy = tmp_path / "retrain.yaml"
    policy.write_text("model_name: m\nexperiment: m\ndata: {path: d.csv, timestamp: t, target: y}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://user:s3cret@127.0.0.1:{port}"}
    done = subprocess.run([sys.executable, "-m", "mlflow_retrain.cli", "history", "--config", str(policy)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "s3cret" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: tracking server http://***@127.0.0.1:{port}")
