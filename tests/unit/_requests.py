"""Request fields shared by the request tests."""

from __future__ import annotations

from typing import Any


def request_fields(**overrides: Any) -> dict[str, Any]:
    """A valid request's fields with ``overrides``; a value of ``...`` drops that field."""
    base: dict[str, Any] = {
        "request_id": "r-1",
        "model": "m",
        "forget_classes": [3],
        "requested_by": "dpo",
        "reason": "GDPR Art. 17",
        "received_at": "2025-01-31T09:00:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}
