"""Operations of the service, one after another: switch, stop and reconcile on ONE worker thread.

The controller is synchronous; the service's HTTP side is asynchronous. Every operation that
changes what runs goes through `Operations`, so that the operations of this process run in order
(the switch lock serializes them with the host CLI and CI jobs). Each is an `Operation`: shown in
/api/status while it runs, timed by its PhaseClock, logged and counted when it ends.

`Operations` is also the proxy scheduler's `SwapEffects`: a proxy swap is a switch like any other.

Crash safety: at start-up, and after any switch that failed on the way without putting back what
ran before (a rollback's error says rolled_back), the worker reconciles what runs with what
should run (Controller.reconcile): it adopts the one healthy modelctl model, stops the rest, and
starts MODELCTL_DEFAULT_PROFILE if nothing runs. Then the proxy is told which model runs
(`on_reconciled`: the scheduler's adopt), so that its requests go straight through.

Nobody waits on a background job: whatever makes one fail is logged and kept as `last_error`
(shown in /api/status), as is the failure of any other operation.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from .controller import DEFAULT_LOCK_TIMEOUT_S, Controller
from .errors import LockTimeoutError, ModelctlError, OperationAbandoned, UsageError
from .events import Publish
from .events import ignore as ignore_event
from .metrics import Metrics
from .progress import PhaseClock
from .report import error_json, phases_text, switch_json
from .results import SwitchResult
from .scheduler import Swapped

log = logging.getLogger("modelctl.service")

T = TypeVar("T")


class SerialWorker(Executor):
    """One daemon thread that runs submitted calls in order: the controller's only thread.

    A daemon, unlike ThreadPoolExecutor's workers (joined at interpreter exit): a SIGTERM in the
    middle of a 15-minute model load must not keep the process alive. What an interrupted
    operation leaves behind is what the next start-up reconcile repairs.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="modelctl-controller", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)
        if wait:
            self._thread.join()


@dataclass
class Operation:
    """What the worker does now: shown as `switch` in /api/status, logged when it ends.

    Its clock's listener is the one place its progress is told: every phase change becomes a
    `switch` event, every newer log line of the loading container a `log` event (events.py).
    """

    kind: str  # "switch", "stop" or "reconcile"
    target: str | None
    phase: str = ""
    detail: str = ""
    since: str = ""
    origin: str = "api"  # who asked: "api", "proxy", "idle", "service"
    op: str = ""  # the id the events carry; the client's own where it gave one (?op=)
    events: Publish = field(default=ignore_event, repr=False)
    clock: PhaseClock = field(init=False)

    def __post_init__(self) -> None:
        self.op = self.op or new_op_id()
        self.clock = PhaseClock(self._on_phase)
        self._told_phase = ""
        self._told_line = ""

    def begin(self) -> None:
        self.phase, self.detail = self.kind, ""
        self.since = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.clock = PhaseClock(self._on_phase)
        self._told_phase = self._told_line = ""

    def _on_phase(self, phase: str, detail: str) -> None:
        """The clock's listener (called in the worker thread): a new phase, or more about this one."""
        self.phase, self.detail = phase, detail
        if phase != self._told_phase:
            self._told_phase, self._told_line = phase, ""
            self.tell(phase, detail)
        elif detail and detail != self._told_line:  # the loading container's newest log line
            self._told_line = detail
            self.events("log", {"op": self.op, "operation": self.kind, "target": self.target, "line": detail[:2000]})

    def tell(self, phase: str, detail: str = "") -> None:
        """A `switch` event: this operation is in `phase` now."""
        self.events(
            "switch",
            {
                "op": self.op,
                "operation": self.kind,
                "target": self.target,
                "origin": self.origin,
                "phase": phase,
                "detail": detail,
                "elapsed": self.clock.elapsed if self.since else 0.0,
            },
        )

    def ended(self, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        """A `swap` event: the result with its phase times, or the error with its cause and hint."""
        data: dict[str, Any] = {
            "op": self.op,
            "operation": self.kind,
            "target": self.target,
            "origin": self.origin,
            "ok": error is None,
            "phases": dict(self.phases),
            "elapsed": self.elapsed,
            "at": _now(),
        }
        if error is None:
            data["result"] = result or {}
        else:
            data["phase"] = self.ended_in
            if isinstance(error, ModelctlError):
                data["error"] = error_json(error)["error"]
            else:
                data["error"] = {"message": f"unexpected {type(error).__name__} (see the service log)", "code": 1}
        self.events("swap", data)

    @property
    def phases(self) -> dict[str, float]:
        return self.clock.phases

    @property
    def ended_in(self) -> str:
        return self.clock.current or self.kind

    @property
    def elapsed(self) -> float:
        return self.clock.elapsed

    def json(self) -> dict[str, Any]:
        return {
            "operation": self.kind,
            "target": self.target,
            "phase": self.phase,
            "detail": self.detail,
            "since": self.since,
            "op": self.op,
            "origin": self.origin,
        }


def new_op_id() -> str:
    return secrets.token_hex(6)


OP_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def valid_op_id(op: str) -> bool:
    """An operation id a client may choose (?op=): 1 to 64 letters, digits, - and _."""
    return 0 < len(op) <= 64 and set(op) <= OP_ID_CHARS


# Told, on the event loop, which model a reconcile left running: (profile, url, generation).
Reconciled = Callable[[str, str, int], object]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Operations:
    """The service's one way to change what runs; the proxy scheduler's SwapEffects."""

    def __init__(
        self, controller: Controller, metrics: Metrics, default_profile: str | None, events: Publish = ignore_event
    ) -> None:
        self.controller = controller
        # Where every operation tells its phases, log lines and end (the service's EventBus.publish).
        self.events = events
        self.metrics = metrics
        self.default_profile = default_profile
        self.worker = SerialWorker()
        self.current: Operation | None = None
        # The last operation that failed: {"operation", "target", "message", "code", "at"}, for /api/status.
        self.last_error: dict[str, Any] | None = None
        self.on_reconciled: Reconciled | None = None
        # Bumped when an operation begins on the worker: the proxy's "what runs" is stale once it moves.
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def shutdown(self) -> None:
        self.worker.shutdown(wait=False)

    def _failed(self, kind: str, target: str | None, exc: BaseException) -> int:
        """Keep a failure for /api/status; returns its exit code."""
        code = exc.exit_code if isinstance(exc, ModelctlError) else 1
        message = (
            exc.message if isinstance(exc, ModelctlError) else f"unexpected {type(exc).__name__} (see the service log)"
        )
        self.last_error = {"operation": kind, "target": target, "message": message, "code": code, "at": _now()}
        return code

    async def _in_worker(self, op: Operation, work: Callable[[Controller, PhaseClock], T]) -> T:
        """Run `work` on the worker thread, after whatever was submitted before it."""
        op.tell("queued")  # at once: the worker may be busy with another operation
        try:
            return await asyncio.wrap_future(self.worker.submit(self._run, op, work))
        except asyncio.CancelledError:  # uvicorn's shutdown gave up waiting for this request
            what = f"{op.kind} {op.target or ''}".rstrip()
            log.warning(
                "%s: still under way (phase %s) when the service stopped; its next start repairs what runs",
                what,
                op.phase or "queued",
            )
            raise OperationAbandoned(
                f"the modelctl service stopped while the {what} was under way (phase {op.phase or 'queued'})",
                hint="its next start reconciles what runs; see `modelctl status`",
            ) from None

    def _run(self, op: Operation, work: Callable[[Controller, PhaseClock], T]) -> T:
        op.begin()
        self.current = op
        self._generation += 1
        try:
            return work(self.controller, op.clock)
        finally:
            if self.current is op:
                self.current = None

    # --- the operations ------------------------------------------------------------------

    async def switch(
        self,
        name: str,
        *,
        origin: str,
        timeout: float | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        rollback: bool = True,
        op_id: str = "",
    ) -> tuple[SwitchResult, int]:
        """Switch on the worker (after whatever was queued before): the API's and the proxy's one way.

        Returns the result and the generation the switch ran as; a failure queues a reconcile.
        """
        op = Operation("switch", name, origin=origin, op=op_id, events=self.events)

        def work(controller: Controller, clock: PhaseClock) -> tuple[SwitchResult, int]:
            generation = self._generation  # this operation's: any later one moves it on
            result = controller.switch(
                name, timeout_s=timeout, lock_timeout_s=lock_timeout, rollback=rollback, clock=clock
            )
            return result, generation

        try:
            result, generation = await self._in_worker(op, work)
        except OperationAbandoned as exc:
            op.ended(error=exc)
            raise
        except Exception as exc:
            op.ended(error=exc)
            self.metrics.observe_switch(name, origin, "failed", op.phases, op.elapsed)
            code = self._failed("switch", name, exc)
            message = exc.message if isinstance(exc, ModelctlError) else f"unexpected {type(exc).__name__}"
            log.log(
                logging.ERROR if code == 1 else logging.WARNING,
                "switch %s: failed with code %d after %.2fs in phase %s (%s): %s",
                name,
                code,
                op.elapsed,
                op.ended_in,
                phases_text(op.phases),
                message,
            )
            # Usage errors and lock timeouts touched nothing; a rollback put back what ran before.
            if not isinstance(exc, (UsageError, LockTimeoutError)) and not getattr(exc, "rolled_back", False):
                # --no-rollback asked for nothing running: the default is not forced back then.
                self.reconcile_in_background(
                    self.default_profile if rollback else None, f"after the failed switch to {name}"
                )
            raise
        op.ended(switch_json(result))
        self.metrics.observe_switch(result.profile, origin, result.outcome, result.phases, result.total_s)
        stopped = f"; stopped {', '.join(result.stopped)}" if result.stopped else ""
        via = "" if origin == "api" else f"; for the {origin}"
        log.info(
            "switch %s: %s in %.2fs (%s)%s%s",
            name,
            result.outcome,
            result.total_s,
            phases_text(result.phases),
            stopped,
            via,
        )
        return result, generation

    async def stop(
        self, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S, origin: str = "api", op_id: str = ""
    ) -> list[str]:
        op = Operation("stop", None, origin=origin, op=op_id, events=self.events)
        try:
            stopped = await self._in_worker(op, lambda c, clock: c.stop(lock_timeout_s=lock_timeout, clock=clock))
        except OperationAbandoned as exc:
            op.ended(error=exc)
            raise
        except Exception as error:
            op.ended(error=error)
            if not isinstance(error, ModelctlError):
                raise
            self._failed("stop", None, error)
            log.warning("stop: failed with code %d after %.2fs: %s", error.exit_code, op.elapsed, error.message)
            raise
        op.ended({"stopped": stopped})
        log.info("stop: stopped %s in %.2fs", ", ".join(stopped) or "nothing", op.elapsed)
        return stopped

    def reconcile_in_background(self, default_profile: str | None, why: str) -> None:
        """Queue a reconcile on the worker. Nobody waits on it: it logs its own outcome, keeps a
        failure as `last_error`, and tells `on_reconciled` which model it left running."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            op = Operation("reconcile", default_profile, origin="service", events=self.events)
            op.begin()
            op.tell("queued")
            self.current = self.current or op  # shown at once at start-up, before the worker picks it up
            self.worker.submit(self._run, op, lambda controller, clock: self._reconcile(controller, op, why, loop))
        except Exception as exc:  # nothing may get lost before the job is even queued
            code = self._failed("reconcile", default_profile, exc)
            log.exception("reconcile (%s): could not be queued (code %d)", why, code)

    def _reconcile(
        self, controller: Controller, op: Operation, why: str, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """The reconcile itself, on the worker thread; every failure is logged and kept."""
        default_profile = op.target
        try:
            generation = self._generation  # this operation's
            stopped = controller.reconcile(default_profile, clock=op.clock)
            active = controller.status().active
        except Exception as exc:
            op.ended(error=exc)
            code = self._failed("reconcile", default_profile, exc)
            if isinstance(exc, ModelctlError):
                log.error("reconcile (%s): failed with code %d after %.2fs: %s", why, code, op.elapsed, exc.message)
            else:
                log.exception("reconcile (%s): unexpected error after %.2fs", why, op.elapsed)
            return
        op.ended({"stopped": stopped, "active": active.profile if active is not None else None})
        started = f"; started {default_profile} ({phases_text(op.phases)})" if "start" in op.phases else ""
        log.info(
            "reconcile (%s): done in %.2fs; stopped %s%s",
            why,
            op.elapsed,
            ", ".join(stopped) or "nothing",
            started,
        )
        if active is not None and active.ready and loop is not None and self.on_reconciled is not None:
            try:
                loop.call_soon_threadsafe(self.on_reconciled, active.profile, active.url, generation)
            except RuntimeError:  # the loop closed: the service is stopping
                pass

    # --- SwapEffects, for the proxy's scheduler ------------------------------------------

    async def swap(self, profile: str, origin: str) -> Swapped:
        result, generation = await self.switch(profile, origin=origin)
        return Swapped(url=result.url, switched=result.outcome == "switched", generation=generation)

    async def stop_model(self) -> None:
        await self.stop(origin="idle")

    def fallback(self) -> str | None:
        if not self.default_profile:
            return None
        try:
            return self.controller.catalog.find(self.default_profile).name
        except ModelctlError:
            return None
