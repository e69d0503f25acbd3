"""Cal.com's error answers: ``ApiError`` raised anywhere in a request, and the body it becomes.

Cal.com's exception filter answers every error with
``{"status": "error", "timestamp", "path", "error": {"code", "message", "details"}}``.
``code`` is the NestJS exception name (``BadRequestException``, ``NotFoundException`` ...)
or, for database errors, a Prisma-derived code (``CONFLICT`` for a unique violation) that
carries no ``details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from calhooks.service.calcom.webhooks import utc_timestamp

BAD_REQUEST = "BadRequestException"
UNAUTHORIZED = "UnauthorizedException"
FORBIDDEN = "ForbiddenException"
NOT_FOUND = "NotFoundException"
CONFLICT = "CONFLICT"
CONFLICT_EXCEPTION = "ConflictException"
THROTTLED = "ThrottlerException"
INTERNAL = "InternalServerErrorException"

THROTTLED_MESSAGE = "CustomThrottlerGuard - Too many requests. Please try again later."

_NEST_ERROR_NAMES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
#: Status codes whose exception name is not ``<Name>Exception`` of the reason phrase.
_DEFAULT_CODES = {429: THROTTLED, 500: INTERNAL}


class ApiError(Exception):
    """An error answer: HTTP status, Cal.com's ``code``, ``message`` and optional ``details``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def default_code(status: int) -> str:
    """The exception name NestJS uses for ``status`` (``ServiceUnavailableException`` ...)."""
    if status in _DEFAULT_CODES:
        return _DEFAULT_CODES[status]
    reason = _NEST_ERROR_NAMES.get(status, "Http")
    return reason.replace(" ", "") + "Exception"


def nest_details(status: int, message: str) -> dict[str, Any]:
    """What a NestJS ``HttpException`` carries as its response: message, error, statusCode."""
    return {
        "message": message,
        "error": _NEST_ERROR_NAMES.get(status, "Error"),
        "statusCode": status,
    }


def bad_request(message: str) -> ApiError:
    return ApiError(400, BAD_REQUEST, message, nest_details(400, message))


def not_found(message: str) -> ApiError:
    return ApiError(404, NOT_FOUND, message, nest_details(404, message))


def forbidden(message: str) -> ApiError:
    return ApiError(403, FORBIDDEN, message, nest_details(403, message))


def unauthorized(message: str) -> ApiError:
    return ApiError(401, UNAUTHORIZED, message, nest_details(401, message))


def conflict(message: str) -> ApiError:
    """A unique-constraint violation, reported the way Cal.com's Prisma filter does."""
    return ApiError(409, CONFLICT, message)


def error_body(request: Request, error: ApiError) -> dict[str, Any]:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    return {"status": "error", "timestamp": utc_timestamp(), "path": path, "error": body}


def error_response(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(request, error), status_code=error.status, headers=error.headers)
