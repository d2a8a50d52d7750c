"""Domain errors raised by services; the API maps each to an HTTP status."""


class DomainError(Exception):
    code = "domain_error"
    http_status = 400


class InvalidTransition(DomainError):
    """A status change the machine does not allow (backwards, from a terminal status, unknown)."""

    code = "invalid_transition"
    http_status = 409


class ActionNotAllowed(DomainError):
    """The order is in a state where this action (cancel, retry, ...) cannot be taken."""

    code = "action_not_allowed"
    http_status = 409


class PermissionDenied(DomainError):
    code = "permission_denied"
    http_status = 403
