"""What the CLI's verbs act on: the Docker engine here (`LocalBackend`), or the modelctl service at
MODELCTL_URL (`ServiceBackend`). Both have the typed methods of `Backend` and return the same
typed results, so each verb is written once and renders one kind of result.

Nothing heavy is imported at module level: the local backend imports the controller (and with it
the docker SDK, when the runtime first connects) when it is constructed, the service backend
imports httpx when it is constructed. `modelctl --help` and `modelctl version` construct neither.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .report import OperationInfo, operation_from_json, status_from_json, switch_from_json

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable

    from .catalog import Catalog
    from .client import ServiceClient
    from .controller import Controller
    from .fetch import Pulled
    from .gpu import GpuMonitor
    from .progress import PhaseClock
    from .results import Status, SwitchResult
    from .runtime import Runtime
    from .settings import Settings


@dataclass
class BackendStatus:
    """What runs now, and the operation under way where the backend can know it."""

    status: Status
    # The switch, stop or reconcile the service's worker runs now; None: none (or not known).
    operation: OperationInfo | None = None
    # Only the service sees operations (another CLI's switch is invisible to this one): the
    # service's status document carries `switch` (null when idle), the local one has no such key.
    knows_operations: bool = False


class Backend(Protocol):
    """The verbs that act: switch, stop and status (and `run`, made of them)."""

    # Whether the clock given to `switch` hears the phases as they happen (a live line is worth
    # showing), or only the result carries them.
    feeds_clock: bool

    def switch(
        self,
        name: str,
        *,
        timeout: float | None = None,
        lock_timeout: float,
        rollback: bool = True,
        dry_run: bool = False,
        clock: PhaseClock | None = None,
    ) -> SwitchResult:
        """Switch to `name`; the clock times the phases and tells its listener (the live line)."""
        ...

    def stop(self, *, lock_timeout: float, clock: PhaseClock | None = None) -> list[str]:
        """Stop every vLLM container; the names of those stopped."""
        ...

    def status(self) -> BackendStatus: ...


class LocalBackend:
    """The controller on this host's Docker engine and GPU."""

    feeds_clock = True

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: Runtime | None = None,
        gpu: GpuMonitor | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        from .catalog import Catalog
        from .controller import Controller

        if runtime is None:
            from .runtime.docker_engine import DockerRuntime  # connects on first use

            runtime = DockerRuntime()
        if gpu is None:
            from .gpu import NvmlGpu

            gpu = NvmlGpu(settings)
        self.settings = settings
        self.catalog = catalog or Catalog(settings.profiles_dir)
        self.runtime = runtime
        self.controller: Controller = Controller(settings, runtime, self.catalog, gpu)

    def switch(
        self,
        name: str,
        *,
        timeout: float | None = None,
        lock_timeout: float,
        rollback: bool = True,
        dry_run: bool = False,
        clock: PhaseClock | None = None,
    ) -> SwitchResult:
        return self.controller.switch(
            name, timeout_s=timeout, lock_timeout_s=lock_timeout, rollback=rollback, dry_run=dry_run, clock=clock
        )

    def stop(self, *, lock_timeout: float, clock: PhaseClock | None = None) -> list[str]:
        return self.controller.stop(lock_timeout_s=lock_timeout, clock=clock)

    def status(self) -> BackendStatus:
        return BackendStatus(self.controller.status())

    def pull(self, name: str, *, timeout: float, clock: PhaseClock | None = None) -> Pulled:
        """`modelctl pull`: the profile's image and weights on this host's engine and HF cache, with
        nothing running touched (never through the service: it is this host's cache)."""
        from .fetch import pull
        from .plan import make_plan
        from .progress import PhaseClock

        plan = make_plan(self.catalog.find(name), self.controller.budget(), self.settings)
        return pull(self.runtime, self.settings, plan, clock or PhaseClock(), timeout)


class ServiceBackend:
    """The service at MODELCTL_URL: its JSON documents read back into the same typed results.

    The service runs the switch and times its phases; its result carries them. While it works, the
    operation's events (`GET /api/events`, followed from before the request) feed the caller's
    clock's listener: the same live line, or plain phase lines, as the local CLI.
    """

    feeds_clock = True

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def switch(
        self,
        name: str,
        *,
        timeout: float | None = None,
        lock_timeout: float,
        rollback: bool = True,
        dry_run: bool = False,
        clock: PhaseClock | None = None,
    ) -> SwitchResult:
        if dry_run or clock is None:
            data = self.client.switch(
                name, timeout=timeout, lock_timeout=lock_timeout, rollback=rollback, dry_run=dry_run
            )
        else:
            data = self._followed(
                clock,
                lambda op: self.client.switch(
                    name, timeout=timeout, lock_timeout=lock_timeout, rollback=rollback, dry_run=False, op=op
                ),
            )
        return switch_from_json(data)

    def stop(self, *, lock_timeout: float, clock: PhaseClock | None = None) -> list[str]:
        if clock is None:
            return list(self.client.stop(lock_timeout=lock_timeout))
        return list(self._followed(clock, lambda op: self.client.stop(lock_timeout=lock_timeout, op=op)))

    def _followed(self, clock: PhaseClock, call: Callable[[str], T]) -> T:
        """`call(op)` with the events of operation `op` told to the clock's listener as they come."""
        from .client import OperationEvents

        phase = ""

        def tell(kind: str, data: dict[str, Any]) -> None:
            nonlocal phase
            if kind == "switch":
                phase = str(data.get("phase") or "")
                clock.listener(phase, str(data.get("detail") or ""))
            elif kind == "log" and phase:
                clock.listener(phase, str(data.get("line") or ""))

        op = secrets.token_hex(8)
        events = OperationEvents(self.client, op, tell)
        events.start()
        try:
            return call(op)
        finally:
            events.finish()

    def status(self) -> BackendStatus:
        data = self.client.status()
        return BackendStatus(
            status_from_json(data), operation=operation_from_json(data.get("switch")), knows_operations=True
        )


def make_backend(settings: Settings) -> Backend:
    """The service when MODELCTL_URL is set, else this host's engine."""
    if settings.url:
        from .client import service_client

        client = service_client(settings)
        assert client is not None
        return ServiceBackend(client)
    return LocalBackend(settings)
