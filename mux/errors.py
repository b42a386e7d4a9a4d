"""Errors mux raises, split by fault, converted to a client's wire format at one boundary.

Hierarchy::

    MuxError                 anything mux reports to a client; carries kind, status, message
    ├── RequestError         the client sent something wrong (4xx)
    └── UpstreamError        a provider failed or refused (its status, or 502/504)

Code raises these anywhere below the routes; the routes layer is the one place that turns
them into a response body in the client's format (``format.render_error``). Anything else
escaping a handler is a bug and becomes a generic 500 without a traceback in the body.
"""

from __future__ import annotations

from mux.ir import ErrorKind

__all__ = ["MuxError", "RequestError", "UpstreamError", "kind_for_status", "status_for_kind"]

_STATUS_FOR_KIND = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.REQUEST_TOO_LARGE: 413,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.OVERLOADED: 529,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.INTERNAL: 500,
}


def status_for_kind(kind: ErrorKind) -> int:
    """The HTTP status mux uses for an error of this kind when no other is known."""
    return _STATUS_FOR_KIND[kind]


def kind_for_status(status: int) -> ErrorKind:
    """The error kind an HTTP error status means."""
    if status in (408, 504):
        return ErrorKind.TIMEOUT
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    for kind, known in _STATUS_FOR_KIND.items():
        if known == status:
            return kind
    if 400 <= status < 500:
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.INTERNAL if status == 500 else ErrorKind.UPSTREAM


class MuxError(Exception):
    """An error to report to the client.

    Args:
      kind: what went wrong.
      message: a sentence for a person, naming what is wrong.
      status: the HTTP status; defaults to the kind's usual status.
      param: the request field at fault, where there is one (OpenAI's ``param``).
      retry_after: seconds the client should wait before retrying, when known.
      final: no other attempt could change this answer (the fake provider's scripted
        failures): the router passes it to the client without retrying or cooling down.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        final: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else status_for_kind(kind)
        self.param = param
        self.retry_after = retry_after
        self.final = final

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.name}, {self.message!r}, status={self.status})"


class RequestError(MuxError):
    """The client's request is malformed or names something that does not exist."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        kind: ErrorKind = ErrorKind.INVALID_REQUEST,
        status: int | None = None,
    ) -> None:
        super().__init__(kind, message, status=status, param=param)


class UpstreamError(MuxError):
    """A provider failed, refused or could not be reached."""
