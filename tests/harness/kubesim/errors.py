"""API errors, rendered as the ``Status`` bodies a real kube-apiserver sends."""

from __future__ import annotations

from typing import Any

from .resources import Resource

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error the API answers with; ``status_body()`` is the JSON ``Status`` object."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status_body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details)


def status_body(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    """A ``Status`` object with ``status: Failure``."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _details(res: Resource, name: str) -> dict:
    details = {"name": name, "kind": res.plural}
    if res.group:
        details["group"] = res.group
    return details


def _qualified(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{_qualified(res)} "{name}" not found', "NotFound", _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, f'{_qualified(res)} "{name}" already exists', "AlreadyExists", _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, message, "Conflict", _details(res, name))


def invalid(res: Resource, name: str, field: str, problem: str) -> ApiError:
    details = {**_details(res, name), "kind": res.kind}
    details["causes"] = [{"reason": "FieldValueRequired", "message": problem, "field": field}]
    return ApiError(422, f'{res.kind} "{name}" is invalid: {field}: {problem}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")
