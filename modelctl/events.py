"""What the service does, as events: the feed of `GET /api/events` (Server-Sent Events).

Operations publish from the worker thread, the service from its event loop; `EventBus.publish` is
safe from any thread and never blocks: each subscriber has a bounded buffer, and a subscriber
whose buffer is full (a reader that does not keep up) is dropped - its stream ends, the switch
goes on. Kinds (README "The service" is the contract):

- `switch`: an operation's phase changed (op, operation, target, origin, phase, detail, elapsed);
- `log`: the loading container's newest log line (op, target, line), at most 2 per second;
- `state`: what runs (the /api/status document, plus the proxy's queue and the last swaps);
- `swap`: an operation ended (op, operation, target, ok, result or error, phases, elapsed);
- `proxy`: the proxy's queue length and requests in flight per model, at most once per second.

Nothing here imports the rest of modelctl: the bus only carries dictionaries.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("switch", "log", "state", "swap", "proxy")
BUFFER_EVENTS = 256  # events a subscriber may have waiting before it is dropped
KEEPALIVE_S = 15.0  # an SSE comment line when nothing else was sent for this long
# Minimum seconds between two events of a kind (the newest one is sent when the interval is over).
MIN_INTERVAL_S = {"log": 0.5, "proxy": 1.0}

# publish(kind, data): what operations are given to tell the world (thread-safe, never blocks).
Publish = Callable[[str, dict[str, Any]], None]


def ignore(kind: str, data: dict[str, Any]) -> None:
    pass


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        """The event as an SSE frame: `id`, `event` and one `data` line of JSON."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data, default=str)}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[Event | None]
    dropped: bool = False
    since: float = field(default_factory=time.monotonic)


class EventBus:
    """Fans events out to the subscribers of /api/events; lives on one event loop."""

    def __init__(self, buffer: int = BUFFER_EVENTS, min_interval: dict[str, float] | None = None) -> None:
        self.buffer = buffer
        self.min_interval = MIN_INTERVAL_S if min_interval is None else min_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # the newest event of a kind held back by its interval

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the subscribers read on (the service's, at start-up)."""
        self.loop = loop

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to every subscriber; safe from any thread, never blocks, never raises."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._throttled(kind, data)
            return
        try:
            loop.call_soon_threadsafe(self._throttled, kind, data)
        except RuntimeError:  # the loop closed meanwhile: the service is stopping
            pass

    def _throttled(self, kind: str, data: dict[str, Any]) -> None:
        interval = self.min_interval.get(kind, 0.0)
        if not interval:
            self._fan_out(kind, data)
            return
        now = time.monotonic()
        wait = self._last_sent.get(kind, -interval) + interval - now
        if wait <= 0 and kind not in self._pending:
            self._last_sent[kind] = now
            self._fan_out(kind, data)
            return
        first = kind not in self._pending
        self._pending[kind] = data  # the newest replaces one held back
        if first:
            assert self.loop is not None
            self.loop.call_later(max(wait, 0.0), self._flush, kind)

    def _flush(self, kind: str) -> None:
        data = self._pending.pop(kind, None)
        if data is not None:
            self._last_sent[kind] = time.monotonic()
            self._fan_out(kind, data)

    def _fan_out(self, kind: str, data: dict[str, Any]) -> None:
        with self._ids_lock:
            event = Event(next(self._ids), kind, data)
        for subscriber in list(self.subscribers):
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        """A reader that does not keep up: out, and its stream ends (the browser reconnects)."""
        subscriber.dropped = True
        self.subscribers.discard(subscriber)
        self.dropped_total += 1
        while not subscriber.queue.empty():  # room for the end marker
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(asyncio.Queue(maxsize=self.buffer))
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    async def stream(
        self, subscriber: Subscriber, first: Event, keepalive_s: float = KEEPALIVE_S
    ) -> AsyncIterator[bytes]:
        """The SSE body of one subscriber: `first` (its `state`), then every event, with keep-alive
        comments; ends when the subscriber is dropped. Unsubscribes when the client goes away."""
        try:
            yield b"retry: 2000\n\n" + first.sse()
            while True:
                try:
                    event = await asyncio.wait_for(subscriber.queue.get(), keepalive_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    yield b": dropped: this reader fell behind; reconnect for a fresh state\n\n"
                    return
                yield event.sse()
        finally:
            self.unsubscribe(subscriber)
