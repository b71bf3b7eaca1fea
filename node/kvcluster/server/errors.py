"""Errors the API answers with, and the routing signals that never reach a client.

Every client-facing error renders as ``{"error": {"code", "message", ...}}``
with its HTTP status; the routing signals (not the leader, wrong range, ...)
are caught by the forwarding path and retried.
"""

from __future__ import annotations

from typing import Any

from kvcluster.keyspace import PartitionDescriptor


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class VersionConflict(ApiError):
    status = 409
    code = "version_conflict"

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"version conflict: the current version is {current_version}", current_version=current_version
        )
        self.current_version = current_version


class Conflict(ApiError):
    status = 409
    code = "conflict"


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Timeout(ApiError):
    """The request may or may not have taken effect: the client must not assume either."""

    status = 504
    code = "timeout"


class Internal(ApiError):
    status = 500
    code = "internal"


class RoutingSignal(Exception):
    """The request reached the wrong replica; nothing was done and it can be retried."""


class NotLeaderSignal(RoutingSignal):
    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (hint {leader})")
        self.leader = leader


class WrongRangeSignal(RoutingSignal):
    def __init__(self, descriptors: list[PartitionDescriptor]) -> None:
        super().__init__("the key is not in this partition's range")
        self.descriptors = descriptors


class StaleEpochSignal(RoutingSignal):
    """A reshape step planned against an older descriptor; the caller re-plans."""

    def __init__(self, descriptor: PartitionDescriptor) -> None:
        super().__init__(f"partition {descriptor.id} is at epoch {descriptor.epoch}")
        self.descriptor = descriptor


class NotHereSignal(RoutingSignal):
    """This node hosts no replica of the partition."""


class FrozenSignal(RoutingSignal):
    """The partition is being merged into its neighbour; retry after the merge."""


class BusySignal(RoutingSignal):
    """The leader cannot take the proposal right now (e.g. transferring leadership)."""
