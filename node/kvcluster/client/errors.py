"""Typed errors of the client, one per documented API error code.

Callers branch on *what happened* (a compare-and-set lost, the key is absent,
the write may or may not have happened), not on HTTP statuses, so every
server answer ``{"error": {"code", "message", ...}}`` becomes a subclass of
:class:`KVError` that keeps the server's code, message and extra fields.
Failures the client detects itself (no endpoint reachable, a connection lost
after a write went out) use the same classes and the same JSON shape, so the
command line can print every error the same way.
"""

from __future__ import annotations

import json
from typing import Any


class KVError(Exception):
    """Base class of every error the client raises for a failed call.

    ``code`` and ``message`` are the server's (or, for failures detected by
    the client, a code of the same vocabulary); ``details`` holds any extra
    fields of the server's error object; ``status`` is the HTTP status when
    there was an answer; ``endpoint`` is the node that gave it.
    """

    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        endpoint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.endpoint = endpoint
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """The error in the API's wire shape ``{"error": {"code", "message", ...}}``."""
        return {"error": {"code": self.code, "message": self.message, **self.details}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __repr__(self) -> str:
        where = f", endpoint={self.endpoint!r}" if self.endpoint else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{where})"


class BadRequest(KVError):
    """400: the request is malformed (empty key, bad parameter); retrying cannot help."""

    default_code = "bad_request"


class Unauthorized(KVError):
    """401: missing or wrong bearer token."""

    default_code = "unauthorized"


class NotFound(KVError):
    """404: the key does not exist (``get`` returns None instead of raising)."""

    default_code = "not_found"


class VersionConflict(KVError):
    """409: a compare-and-set lost; ``current_version`` is the key's version now (0: absent)."""

    default_code = "version_conflict"

    def __init__(self, message: str, *, current_version: int, **kwargs: Any) -> None:
        details = dict(kwargs.pop("details", None) or {})
        details["current_version"] = current_version
        super().__init__(message, details=details, **kwargs)
        self.current_version = current_version


class Conflict(KVError):
    """409 other than a lost compare-and-set: the request clashes with the cluster's state (e.g. an
    admin call naming nodes that have not joined yet); ``code`` says which."""

    default_code = "conflict"


class TooLarge(KVError):
    """413: the key or the value exceeds the cluster's limit."""

    default_code = "too_large"


class Unavailable(KVError):
    """503, or no endpoint reachable: the request certainly did not take effect.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one.
    """

    default_code = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class OutcomeUnknown(KVError):
    """504, or the connection failed after a write was sent: it may or may not have taken effect.

    The client never retries such a write by itself: a blind retry could apply
    it twice (overwriting someone else's write in between) or turn a success
    into a spurious version conflict. Read the key to find out.
    """

    default_code = "timeout"


class ServerError(KVError):
    """Any other 5xx answer (a server bug or a proxy failure)."""

    default_code = "internal"


_BY_STATUS: dict[int, type[KVError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: VersionConflict,
    413: TooLarge,
    503: Unavailable,
    504: OutcomeUnknown,
}


def error_from_response(
    status: int,
    body: bytes,
    *,
    endpoint: str | None = None,
    retry_after: float | None = None,
) -> KVError:
    """Build the typed error for a non-2xx answer; tolerant of non-JSON bodies (e.g. from a proxy)."""
    code: str | None = None
    message = ""
    details: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code")) if err.get("code") is not None else None
        message = str(err.get("message", ""))
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
    else:
        message = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    common: dict[str, Any] = {"code": code, "status": status, "endpoint": endpoint, "details": details}
    if status == 409 and (code in (None, "version_conflict")):
        current = details.pop("current_version", 0)
        try:
            current_version = int(current)
        except (TypeError, ValueError):
            current_version = 0
        return VersionConflict(message or "version conflict", current_version=current_version, **common)
    if status == 409:
        return Conflict(message or "conflict", **common)
    if status == 503:
        return Unavailable(message or "unavailable", retry_after=retry_after, **common)
    if status == 404 and code not in (None, "not_found"):
        # A wrong URL (no such endpoint) must not read as "the key is absent".
        return KVError(message or "HTTP 404", **common)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else KVError
    return cls(message or f"HTTP {status}", **common)
