"""Verifying signed requests, exactly as MLflow 3 signs its webhook deliveries (`mlflow/webhooks/delivery.py`).

The scheme and the signing side live in `base/signing.py` (the notifications sign with it too):
headers `X-MLflow-Delivery-Id`, `X-MLflow-Timestamp` and `X-MLflow-Signature: v1,<base64
HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{body}")>`. `POST /trigger` takes the same scheme as
MLflow's webhooks, so one signing snippet serves any system that asks for a cycle.

These functions are pure: the clock is a parameter, and a delivery id seen before is the queue's
business (a UNIQUE column, durable across restarts), not theirs.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mlflow_retrain.base.signing import signature
from mlflow_retrain.serve.parse import Refused, signing_headers

TOLERANCE_SECONDS = 300  # Standard Webhooks' default: clocks a few minutes apart still verify


@dataclass(frozen=True)
class Check:
    """The verdict on one request's signature: `ok`, or the HTTP status and why it was refused."""

    ok: bool
    status: int = 202
    reason: str = "signature verified"
    delivery_id: str = ""


def verify(secret: str, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes, *, now: float,
           tolerance: float = TOLERANCE_SECONDS) -> Check:
    """Whether a request was signed with `secret` within `tolerance` seconds of `now`.

    The headers are read by `parse.signing_headers` (each once, bounded ASCII). The signature header
    may list several space-separated `v1,...` values (Standard Webhooks does, to rotate a secret); one
    match suffices. Comparison is constant-time. A stale or future timestamp is refused even with a
    good signature: a captured request cannot be replayed later, and the queue's record of delivery
    ids only has to outlive the tolerance window.
    """
    try:
        sent = signing_headers(headers)
    except Refused as exc:
        return Check(False, exc.status, exc.reason)
    skew = now - sent.seconds
    if abs(skew) > tolerance:
        return Check(False, 401, f"timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'in the future'} "
                                 f"(tolerance {tolerance:.0f} s)", sent.delivery_id)
    expected = signature(secret, sent.delivery_id, sent.timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in sent.signatures):
        return Check(False, 401, "signature does not match", sent.delivery_id)
    return Check(True, delivery_id=sent.delivery_id)
