"""Prometheus metrics of the service (`GET /metrics`): swaps, their phases, the proxy's queue and requests.

One registry per Service (not the process-global one), so tests and embedders can run several.
Label values are profile names, never raw client input: an unknown model counts as "unknown".
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Swaps take from well under a second (the stand-in) to many minutes (a cold vLLM load).
SWAP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _CachedChildren:
    """labels() from a dict: prometheus_client checks and locks on every call, and the proxy's
    request path asks for the same few children each time (a profile's requests, its in-flight
    count). clear() and remove() forget the cached children with the metric's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cached: dict[tuple[Any, ...], Any] = {}

    def labels(self, *values: Any, **named: Any) -> Any:
        if named:
            return super().labels(*values, **named)  # type: ignore[misc]
        try:
            return self._cached[values]
        except KeyError:
            child = self._cached[values] = super().labels(*values)  # type: ignore[misc]
            return child

    def remove(self, *values: Any) -> None:
        self._cached.clear()
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self._cached.clear()
        super().clear()  # type: ignore[misc]


class Counter(_CachedChildren, prometheus_client.Counter):
    pass


class Gauge(_CachedChildren, prometheus_client.Gauge):
    pass


class Histogram(_CachedChildren, prometheus_client.Histogram):
    pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.swap_phase = Histogram(
            "modelctl_swap_phase_seconds",
            "Duration of each phase of a switch (plan, lock, stop, release = VRAM release wait, start, load)",
            ["phase"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.swap_ready = Histogram(
            "modelctl_swap_seconds",
            "Whole switch duration, from the request until the model is ready (or the switch failed)",
            ["outcome"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.swaps = Counter(
            "modelctl_swaps",
            "Switches by target profile, origin (api, proxy) and outcome (switched, unchanged, failed)",
            ["profile", "origin", "outcome"],
            registry=r,
        )
        self.queue_length = Gauge("modelctl_proxy_queue_length", "Proxy requests waiting for their model", registry=r)
        self.queue_wait = Histogram(
            "modelctl_proxy_queue_wait_seconds",
            "Time a proxy request waited for its model to be active",
            ["profile"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "modelctl_proxy_requests", "Proxy requests by profile and HTTP status", ["profile", "status"], registry=r
        )
        self.inflight = Gauge(
            "modelctl_proxy_inflight_requests", "Proxy requests being served upstream", ["profile"], registry=r
        )
        self.rejected = Counter(
            "modelctl_proxy_rejected", "Proxy requests refused because the queue was full", registry=r
        )
        self.active = Gauge(
            "modelctl_proxy_active_model", "1 for the model the proxy serves now", ["profile"], registry=r
        )
        self.foreign_containers = Counter(
            "modelctl_foreign_containers",
            "Foreign vLLM containers started while the service runs, by action (stopped, warned, stop-failed)",
            ["action"],
            registry=r,
        )

    def observe_switch(self, profile: str, origin: str, outcome: str, phases: dict[str, float], total_s: float) -> None:
        self.swaps.labels(profile, origin, outcome).inc()
        if outcome == "unchanged":
            return  # a no-op switch is not a swap: keep it out of the durations
        for phase, seconds in phases.items():
            self.swap_phase.labels(phase).observe(seconds)
        self.swap_ready.labels("failed" if outcome == "failed" else "ready").observe(total_s)

    def count_request(self, profile: str, status: int) -> None:
        """One proxy request ended with `status` (a profile name, or "unknown")."""
        self.requests.labels(profile, status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
