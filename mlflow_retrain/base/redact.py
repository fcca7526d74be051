"""Secrets never printed: credentials inside URIs are masked in everything the tool prints or forwards.

A tracking URI may carry a password (`http://user:pass@host:5000`) or a token in its query
(`...?token=...`); MLflow repeats the URI in its own lines ("View run ... at: <uri>", "API request to
<uri> failed ..."). `redact` masks a URI's userinfo, the values of credential-like query parameters,
and the literal values of the credentials MLflow reads from the environment. The CLI applies it at
every exit: its error line, its logging handlers, the `mlflow` loggers, and the streams that carry
MLflow's and the training subprocess's output (`streams.py`).
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

MASK = "***"

# scheme://userinfo@ : everything between "//" and the last "@" before the path is userinfo
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/?#\s@'\"<>]*@)+")
_PARAMS = ("token", "access_token", "id_token", "refresh_token", "auth_token", "password", "passwd", "pwd",
           "secret", "client_secret", "api_key", "apikey", "sig", "signature", "x-amz-signature", "x-amz-security-token", "x-amz-credential", "x-goog-signature", "x-goog-credential")
_QUERY = re.compile(r"(?P<name>(?<![\w\-])(?:" + "|".join(re.escape(p) for p in _PARAMS) + r"))=(?P<value>[^&\s'\"#<>]+)",
                    re.IGNORECASE)
# environment variables whose values are credentials, and the URIs whose userinfo may hold one
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
              "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING", "PGPASSWORD")
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RETRAIN_QUEUE")
_MIN_SECRET = 4  # shorter values would mask ordinary words


def _known_secrets() -> list[str]:
    """Literal credential values from the environment (longest first), raw and percent-decoded."""
    found = {os.environ.get(name, "") for name in SECRET_ENV}
    for name in URI_ENV:
        try:
            parts = urlsplit(os.environ.get(name, ""))
        except ValueError:
            continue
        if parts.password:
            found |= {parts.password, unquote(parts.password)}
        if parts.username and parts.password is None:  # https://TOKEN@host: the user part is the secret
            found |= {parts.username, unquote(parts.username)}
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def redact(text: Any) -> str:
    """`text` with URI userinfo, credential query parameters and known secret values masked."""
    text = str(text)
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m.group('name')}={MASK}", text)
    for secret in _known_secrets():
        text = text.replace(secret, MASK)
    return text


def scrub(exc: BaseException | None) -> None:
    """Redact an exception's message (and its causes') in place, so a traceback shows no secret."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
            if hasattr(exc, "message") and isinstance(exc.message, str):  # MlflowException keeps its own
                exc.message = redact(exc.message)
        except (AttributeError, TypeError):
            pass
        exc = exc.__cause__ or exc.__context__


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            scrub(record.exc_info[1])
            record.exc_text = None
        return True


_FILTER = RedactingFilter()


def install_log_filter(*logger_names: str) -> None:
    """Redact every log record this process emits; idempotent.

    The filter goes on the handlers of the root logger, of MLflow's loggers (MLflow gives "mlflow"
    its own handler and stops propagation) and of `logger_names`, and on the loggers themselves;
    handlers, not loggers, see the records of child loggers. A record factory covers handlers set up
    later (the CLI's `basicConfig`, a reconfiguration of MLflow's loggers)."""
    for name in ("", "mlflow", "urllib3", *logger_names):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if _FILTER not in target.filters:
                target.addFilter(_FILTER)
    make = logging.getLogRecordFactory()
    if not getattr(make, "_redacting", False):
        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            _FILTER.filter(record)
            return record

        factory._redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each complete line before passing it to `target`.

    Text is held until its line ends (a URI cut between two writes is still masked), and flushed as
    is on `flush()`; `fileno()` is the target's, so fd-level redirects still find the real file.
    """

    def __init__(self, target: TextIO):
        self.target = target
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, _, self._pending = self._pending.rpartition("\n")
            self.target.write(redact(done) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(redact(self._pending))
            self._pending = ""
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    @property
    def buffer(self) -> Any:  # bytes written here bypass redaction; click's echo uses it for bytes only
        return self.target.buffer
