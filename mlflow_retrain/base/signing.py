"""Signing a request exactly as MLflow 3 signs its webhook deliveries (`mlflow/webhooks/delivery.py`).

MLflow sends three headers with every delivery: `X-MLflow-Delivery-Id` (a UUID),
`X-MLflow-Timestamp` (whole Unix seconds, as a string) and, when the webhook has a secret,
`X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{body}")>` where
body is the JSON text it posts (UTF-8). The notifications sign with it (`adapters/notify.py`) and
`serve` verifies with it (`serve/signing.py`), so one receiver-side check fits MLflow's webhooks and
ours, and one signing snippet serves any system that calls `POST /trigger`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

DELIVERY_ID = "X-MLflow-Delivery-Id"
TIMESTAMP = "X-MLflow-Timestamp"
SIGNATURE = "X-MLflow-Signature"
VERSION = "v1"


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `{delivery_id}.{timestamp}.{body}`: MLflow's own construction."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(secret: str, body: bytes, *, now: float | None = None,
                   delivery_id: str | None = None) -> dict[str, str]:
    """The headers a caller of `POST /trigger` sends: a fresh delivery id, the time, the signature."""
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(time.time() if now is None else now))
    return {"Content-Type": "application/json", DELIVERY_ID: delivery_id, TIMESTAMP: timestamp,
            SIGNATURE: signature(secret, delivery_id, timestamp, body)}
