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

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})  # sent with the answer (`WWW-Authenticate`, `Allow`)

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


class BodyTimeoutError(GRMError):
    """The client stopped sending its request body (HTTP 408; the connection is closed after the answer)."""

    status = 408
    type = "invalid_request_error"


class RequestTimeoutError(GRMError):
    status = 504
    type = "timeout"


class ClientDisconnected(GRMError):
    status = 499
    type = "client_closed_request"


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes", "any"})


def _is_tag(part: object) -> bool:
    """A union member's tag in a pydantic error location (`function-after[valid_unicode(), str]`,
    `list[ChatMessageIn]`, `str`, a model's class name), not a field the caller sent."""
    if not isinstance(part, str):
        return False
    return not part.isidentifier() or part in _TYPE_TAGS or part[:1].isupper()


def caller_loc(loc: Sequence[object]) -> str:
    """A pydantic/FastAPI error location in the caller's terms: `messages.1.content`, never `body.` or tags."""
    return ".".join(str(p) for p in loc if p != "body" and not _is_tag(p))


def invalid_from_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "") -> InvalidRequestError:
    """A pydantic/FastAPI validation error list -> one 400 naming the first bad field (`param`) as the caller
    spelled it; the alternatives of a union at that field are listed together."""
    if not errors:
        return InvalidRequestError(f"{prefix}invalid request")
    if errors[0].get("type") == "json_invalid":
        return InvalidRequestError(f"{prefix}the body is not valid JSON", code="json_invalid")

    def where(e: Mapping[str, Any]) -> str:
        return caller_loc(e.get("loc", ()))

    def mismatch(e: Mapping[str, Any]) -> bool:
        return str(e.get("type", "")).endswith("_type")

    # Each member of a union reports: a value problem inside the member the caller's type matched (at or
    # under the first bad field) is the answer; if no member's type matched, every member's wish is.
    first = where(errors[0])
    inside = [e for e in errors if not mismatch(e) and (where(e) + ".").startswith(first + "." if first else "")]
    loc = where(inside[0]) if inside else first
    same = [e for e in errors if where(e) == loc]
    chosen = [e for e in same if not mismatch(e)] or same
    messages = dict.fromkeys(str(e.get("msg", "invalid value")).removeprefix("Value error, ") for e in chosen)
    others = len(errors) - len(same)
    more = f" (and {others} more problems)" if others else ""
    message = f"{prefix}{loc + ': ' if loc else ''}{'; or: '.join(messages)}{more}"
    return InvalidRequestError(message, param=loc or None, code=str(chosen[0].get("type")))


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
