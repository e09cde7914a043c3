"""Errors a user can act on: each carries its message, a hint and the CLI's exit code (the README
lists the codes; ARCHITECTURE.md "Invariants").

They are raised where the cause is known and rendered once: by the CLI (text or --json) and by
the service (http_errors.py: JSON, or OpenAI's error shape on /v1).
"""

from __future__ import annotations


class ModelctlError(Exception):
    """Base for every error modelctl reports to a user. `exit_code` is the CLI contract."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Set by a failed switch that put the previous model (or container) back: what runs now
        # is what ran before, so nothing should "repair" it.
        self.rolled_back = False

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  -> {self.hint}"


class UsageError(ModelctlError):
    """Bad usage: an unknown or invalid profile, a bad setting or argument."""

    exit_code = 2


class ProfileError(UsageError):
    """A profile file is invalid; the message names the file, the key and what is expected."""


class UnknownProfileError(UsageError):
    pass


class DoesNotFitError(ModelctlError):
    """Refused: the model needs more GPU memory than this GPU has (or than is free)."""

    exit_code = 3


class NotReadyError(ModelctlError):
    """The model did not become ready: its container crashed, timed out or could not start."""

    exit_code = 4

    def __init__(self, message: str, *, hint: str | None = None, log_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail


class EngineUnreachableError(ModelctlError):
    exit_code = 5


class LockTimeoutError(ModelctlError):
    exit_code = 6


class QueueFull(LockTimeoutError):
    """Too many proxy requests wait for their model (HTTP 503 with Retry-After, like a busy lock)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, hint=f"retry after {retry_after} s, or raise MODELCTL_PROXY_MAX_QUEUE")
        self.retry_after = retry_after


class UpstreamError(NotReadyError):
    """The model's server could not be reached although its switch said it was ready (HTTP 502)."""


class Unauthorized(UsageError):
    """The bearer token is missing or wrong (HTTP 401; exit code 2 for the CLI, a bad setting)."""


class Forbidden(UsageError):
    """Without a token: a request from a web page, or for a host name that is not this loopback
    service (DNS rebinding) (HTTP 403)."""


class Interrupted(ModelctlError):
    """SIGINT or SIGTERM during a switch; raised after the rollback (exit code 130, like Ctrl-C)."""

    exit_code = 130


class OperationAbandoned(EngineUnreachableError):
    """The service is stopping while an operation runs (HTTP 503, exit code 5 like a lost service)."""
