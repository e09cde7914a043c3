"""Errors a user can act on: each carries its message and the CLI's exit code (DESIGN.md).

They are raised where the cause is known and rendered once: by the CLI (text or --json) and,
later, by the service (as JSON).
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
