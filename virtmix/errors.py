"""One exception hierarchy for virtmix; each class carries the exit code the CLI returns.

Only the CLI layer turns these into exit codes (see cli/__init__.py). Library code raises.

Exit codes (documented in the README):
  0 ok, 1 unexpected bug, 2 usage, 3 inventory invalid, 4 template error,
  5 libvirt/connection failure, 6 not found, 7 rootfs build failed,
  8 wrong state (e.g. needs a running domain; a started domain died at once),
  9 conflict (foreign domain, lock held),
  10 plan: changes pending (not an error), 11 apply finished with failures,
  12 doctor: a host check failed, 13 apply PLAN: the saved plan is stale, 126/127
  attach/execute: the command cannot be run / was not found (as a shell), 130 interrupted
  (Ctrl-C).
"""

from __future__ import annotations


class VirtmixError(Exception):
    """Base class: an expected failure with a message meant for the admin."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(VirtmixError):
    """Raised when command-line arguments do not make sense together."""

    exit_code = 2


class InventoryError(VirtmixError):
    """Raised when an inventory or profile file is unreadable or invalid.

    Carries the file, the key path inside it and the line where known, so the message
    can point the admin at the exact place to fix.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        where = ""
        if file:
            where = f"{file}:{line}" if line else f"{file}"
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.detail = message


class TemplateError(VirtmixError):
    """Raised when a domain template fails to render or renders invalid XML."""

    exit_code = 4


class BackendError(VirtmixError):
    """Raised when libvirt refuses an operation or a connection cannot be opened."""

    exit_code = 5


class NotFoundError(VirtmixError):
    """Raised when a named domain, entry, network or tree does not exist."""

    exit_code = 6


class RootfsError(VirtmixError):
    """Raised when building, cloning or deleting a root filesystem fails."""

    exit_code = 7


class StateError(VirtmixError):
    """Raised when a domain is in the wrong state for the verb (e.g. not running)."""

    exit_code = 8


class StartFailedError(StateError):
    """Raised when a domain libvirt started did not stay up (its init or QEMU died within
    the settle window) or, with --wait, did not become ready in time. Wrong state: 8."""


class ConflictError(VirtmixError):
    """Raised when virtmix would touch something it does not own, or a lock is held."""

    exit_code = 9


class CommandNotFoundError(VirtmixError):
    """Raised when the command given to attach/execute does not exist in the container
    (exit 127, as a shell reports it)."""

    exit_code = 127


class CommandNotExecutableError(VirtmixError):
    """Raised when the command given to attach/execute exists there but cannot be run
    (exit 126, as a shell reports it)."""

    exit_code = 126


class ApplyFailedError(VirtmixError):
    """Raised at the end of an apply in which some entries failed (the rest went on)."""

    exit_code = 11


class StalePlanError(VirtmixError):
    """Raised by `apply PLAN` when the inventory, a profile or template, or what libvirt
    holds changed since the plan was saved (Terraform's "Saved plan is stale")."""

    exit_code = 13


# Exit codes that are outcomes rather than errors, shared by the commands that return them.
EXIT_CHANGES_PENDING = 10  # plan: apply would change something
EXIT_DOCTOR_FAILED = 12    # doctor: at least one host check failed
EXIT_INTERRUPTED = 130     # Ctrl-C, as shells report SIGINT
