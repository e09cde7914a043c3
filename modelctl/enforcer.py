"""The service's watch between commands: at most one vLLM model, modelctl's (ARCHITECTURE.md "Invariants").

A switch stops every foreign vLLM container, but one started by hand while the service runs would
otherwise keep running beside the service's model until the next swap. The `Enforcer` reads the
engine's container start events in a daemon thread and, for each vLLM server container modelctl
did not start, stops it at once (`MODELCTL_ENFORCE=stop`, the default) or only reports it
(`MODELCTL_ENFORCE=warn`). Both are logged and handed to `on_foreign` (the service counts them).

modelctl's own containers (its label) are never touched. When the event stream breaks (the engine
restarts, the socket goes away) the enforcer reconnects with a capped back-off and asks the engine
to replay the events since the last one it saw, so nothing started in the gap is missed while the
engine keeps its event log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .errors import ModelctlError
from .runtime import LABEL_MANAGED, ContainerInfo, StartEvent, StartEvents, WatchedRuntime
from .settings import Settings

log = logging.getLogger("modelctl.enforcer")

# Seconds a foreign container gets between SIGTERM and SIGKILL. Not MODELCTL_STOP_GRACE: a container
# just started has nothing to finish, and its main process often cannot yet take SIGTERM at all (a
# container's pid 1 ignores signals it installed no handler for; vLLM installs its handlers only
# after its imports, seconds in), so the grace would simply pass. One second keeps the promise of
# "stopped within 2 s" with the event's own latency (tens of ms).
ENFORCE_GRACE_S = 1
# Reconnect delays after the event stream breaks: doubling from the first, never above the last.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
# Start events remembered to ignore the replay of one already handled after a reconnect.
SEEN_EVENTS = 1024
STOPPED = "stopped"
WARNED = "warned"
STOP_FAILED = "stop-failed"


class Enforcer:
    """Stops (or reports) foreign vLLM containers started while it runs. start() / stop()."""

    def __init__(
        self,
        runtime: WatchedRuntime,
        settings: Settings,
        on_foreign: Callable[[ContainerInfo, str], None] | None = None,
    ) -> None:
        """`on_foreign(container, action)` is called once per foreign vLLM container seen, with the
        action "stopped", "warned" or "stop-failed"; it runs on the enforcer's threads and must not block.
        """
        self.runtime = runtime
        self.settings = settings
        self.on_foreign = on_foreign
        self.connected = threading.Event()  # set while the event stream is open
        self.last_error: str | None = None
        self._halt = threading.Event()
        self._events: StartEvents | None = None
        self._events_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stoppers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modelctl-enforcer-stop")
        self._seen: deque[tuple[str, int]] = deque(maxlen=SEEN_EVENTS)

    @property
    def mode(self) -> str:
        return self.settings.enforce

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="modelctl-enforcer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the watch: close the stream, wait for the thread and any stop under way (bounded)."""
        self._halt.set()
        with self._events_lock:
            if self._events is not None:
                self._events.close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._stoppers.shutdown(wait=False, cancel_futures=True)

    # --- the watch -----------------------------------------------------------------------

    def _watch(self) -> None:
        since_nano: int | None = None
        delay = RECONNECT_FIRST_S
        while not self._halt.is_set():
            try:
                events = self.runtime.container_starts(since_nano)
            except ModelctlError as exc:
                self._lost(exc.message)
                self._halt.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            with self._events_lock:
                self._events = events
            if self._halt.is_set():
                events.close()
                break
            if self.last_error is not None:
                log.info("watching the engine's events again (MODELCTL_ENFORCE=%s)", self.mode)
            self.last_error = None
            self.connected.set()
            delay = RECONNECT_FIRST_S
            connected_at = time.time_ns()
            try:
                for event in events:
                    since_nano = event.time_nano
                    self._handle(event)
            except ModelctlError as exc:
                if not self._halt.is_set():
                    self._lost(exc.message)
            except Exception:  # never let the watch die silently: log, reconnect
                log.exception("the enforcer failed on an engine event; reconnecting")
            finally:
                self.connected.clear()
            # Replay from the last event seen, or from when this connection opened.
            since_nano = since_nano or connected_at
            self._halt.wait(delay)

    def _lost(self, reason: str) -> None:
        if self.last_error is None:
            log.warning("cannot watch the engine's events (retrying): %s", reason)
        self.last_error = reason

    def _handle(self, event: StartEvent) -> None:
        key = (event.container_id, event.time_nano)
        if key in self._seen:
            return  # replayed after a reconnect
        self._seen.append(key)
        if event.labels.get(LABEL_MANAGED) == "true":
            return  # modelctl's own: never touched
        try:
            info = self.runtime.vllm_container(event.container_id)
        except ModelctlError as exc:
            log.warning("could not inspect container %s: %s", event.container_id[:12], exc.message)
            return
        if info is None or not info.foreign or not info.running:
            return  # not a vLLM server, modelctl's, or already gone
        if self.mode == "warn":
            log.warning(
                "a foreign vLLM container runs beside modelctl's model: %s (%s, image %s); "
                "left running (MODELCTL_ENFORCE=warn)",
                info.name,
                info.id[:12],
                info.image,
            )
            self._report(info, WARNED)
            return
        if not self._halt.is_set():
            self._stoppers.submit(self._stop_foreign, info)

    def _stop_foreign(self, info: ContainerInfo) -> None:
        try:
            self.runtime.stop([info], ENFORCE_GRACE_S)
        except ModelctlError as exc:
            log.error("could not stop the foreign vLLM container %s (%s): %s", info.name, info.id[:12], exc.message)
            self._report(info, STOP_FAILED)
            return
        log.warning(
            "stopped a foreign vLLM container started while the service runs: %s (%s, image %s) "
            "(MODELCTL_ENFORCE=stop)",
            info.name,
            info.id[:12],
            info.image,
        )
        self._report(info, STOPPED)

    def _report(self, info: ContainerInfo, action: str) -> None:
        if self.on_foreign is None:
            return
        try:
            self.on_foreign(info, action)
        except Exception:
            log.exception("the enforcer's callback failed for %s", info.name)
