"""One base error with a stable code; the user sees a generic message, the audit trail the detail."""

from __future__ import annotations


class AlacopError(Exception):
    code = "error"
    status = 400
    # Set once the refusal is in the audit trail, so the web error page does not record it twice.
    audited = False

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.code)
        if code is not None:
            self.code = code
        self.detail = detail


class InvalidInput(AlacopError):
    code = "invalid_input"


class NotFound(AlacopError):
    code = "not_found"
    status = 404


class Conflict(AlacopError):
    code = "conflict"
    status = 409


class FlowExpired(AlacopError):
    code = "flow_expired"
    status = 410


class FlowInvalid(AlacopError):
    code = "flow_invalid"


class CsrfFailed(AlacopError):
    code = "csrf_failed"
    status = 403


class RateLimited(AlacopError):
    code = "rate_limited"
    status = 429


class ConfigError(AlacopError):
    code = "config_error"


class Forbidden(AlacopError):
    """The actor may not do this to this target: outside their agencies, or above their role."""

    code = "forbidden"
    status = 403


class StepUpRequired(AlacopError):
    """The change needs a sign-in or re-authentication within the last few minutes (CJIS IA-11)."""

    code = "step_up_required"
    status = 401
