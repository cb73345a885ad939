"""The error tree of grm-server; the HTTP edge maps each class to a status and an OpenAI error body.

GRMError                       (500 internal_error)
├── InvalidRequestError        (400 invalid_request_error; `param` names the field)
├── AuthenticationError        (401 authentication_error)
├── NotFoundError              (404 not_found_error; e.g. an unknown model name)
├── PayloadTooLargeError       (413 invalid_request_error)
├── ConfigurationError         (500 configuration_error; bad settings or missing package)
├── BackendError               (502 backend_error; the engine failed or is unreachable)
│   └── BackendUnavailableError (503 backend_unavailable; not loaded / not ready)
├── NoValidJudgmentError       (502 no_valid_judgment; every sampled judgment was unparseable)
├── OverloadedError            (429 rate_limit_exceeded; the judging queue is full or an item waited too long)
├── RequestTimeoutError        (504 timeout; the engine requests were aborted)
└── ClientDisconnected         (499 client_closed_request; the client left, its engine requests were aborted)

Meta RM errors (`meta_rm.errors`, which never imports the server) are mapped here and only here, by
`meta_rm_errors()` around every call into a Meta RM: config -> ConfigurationError, unavailable ->
BackendUnavailableError, any other failure (a `MetaRMError` or not) -> BackendError (502), never a 500.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from meta_rm.errors import MetaRMBackendError, MetaRMConfigError, MetaRMUnavailableError


class GRMError(Exception):
    """Base class: carries the OpenAI error `type`, HTTP `status`, and the offending `param`."""

    status: int = 500
    type: str = "internal_error"
    retry_after: int | None = None  # seconds; the HTTP edge sends it as `Retry-After`

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(GRMError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(GRMError):
    status = 401
    type = "authentication_error"


class NotFoundError(GRMError):
    status = 404
    type = "not_found_error"


class PayloadTooLargeError(GRMError):
    status = 413
    type = "invalid_request_error"


class ConfigurationError(GRMError):
    status = 500
    type = "configuration_error"


class BackendError(GRMError):
    status = 502
    type = "backend_error"


class BackendUnavailableError(BackendError):
    status = 503
    type = "backend_unavailable"


class NoValidJudgmentError(GRMError):
    status = 502
    type = "no_valid_judgment"


class OverloadedError(GRMError):
    retry_after = 1
    status = 429
    type = "rate_limit_exceeded"


class RequestTimeoutError(GRMError):
    status = 504
    type = "timeout"


class ClientDisconnected(GRMError):
    status = 499
    type = "client_closed_request"


def invalid_from_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "") -> InvalidRequestError:
    """A pydantic/FastAPI validation error list -> one 400 naming the first bad field (`param`)."""
    if not errors:
        return InvalidRequestError(f"{prefix}invalid request")
    err = errors[0]
    if err.get("type") == "json_invalid":
        return InvalidRequestError(f"{prefix}the body is not valid JSON (UTF-8)", code="json_invalid")
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    message = f"{prefix}{loc + ': ' if loc else ''}{err.get('msg', 'invalid value')}{more}"
    return InvalidRequestError(message, param=loc or None, code=str(err.get("type")))


def from_meta_rm(exc: Exception) -> GRMError:
    """Map a Meta RM failure onto this tree; anything unexpected is a 502, like a generator failure."""
    if isinstance(exc, GRMError):
        return exc
    if isinstance(exc, MetaRMConfigError):
        return ConfigurationError(f"Meta RM: {exc}")
    if isinstance(exc, MetaRMUnavailableError):
        return BackendUnavailableError(f"Meta RM: {exc}")
    if isinstance(exc, MetaRMBackendError):
        return BackendError(f"Meta RM: {exc}")
    return BackendError(f"Meta RM failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def meta_rm_errors() -> Iterator[None]:
    """Wrap every call into a Meta RM: whatever it raises leaves as a GRMError (cancellation passes)."""
    try:
        yield
    except GRMError:
        raise
    except Exception as exc:
        raise from_meta_rm(exc) from exc


def first_failure(group: BaseExceptionGroup[BaseException], what: str) -> GRMError:
    """The error to raise for a task group that failed: its first GRMError as it is, anything else as a 502."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if isinstance(first, GRMError):
        return first
    err = BackendError(f"{what} failed: {type(first).__name__}: {first}")
    err.__cause__ = first
    return err
