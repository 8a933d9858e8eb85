"""Each request watched: counted and timed by route for GET /metrics, and logged
in one access line (logger `pocket.access`) with the request id it is answered
with."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram

ACCESS = logging.getLogger("pocket.access")
# A label value per method a client may send would let clients grow the metrics
# without bound: any other method is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests take about a millisecond here: finer buckets than the library's.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# The refusals worth counting by code: the rules' (409) and the fields' (422).
REFUSALS = frozenset({HTTPStatus.CONFLICT, HTTPStatus.UNPROCESSABLE_ENTITY})
UNMATCHED = "unmatched"  # The route of a request no route took (404, 405).
Metric = TypeVar("Metric", Counter, Histogram)


@dataclass(frozen=True)
class RequestMetrics:
    """The HTTP metrics, in one app's registry."""

    requests: Counter
    latency: Histogram
    refusals: Counter
    # Each metric's child per label set, found once: labels() checks and locks
    # every call. A race makes the same child twice over, which labels() returns
    # each time.
    children: dict[tuple[object, ...], Any] = field(default_factory=dict)

    def child(self, metric: Metric, *labels: str) -> Metric:
        """The metric's child for these label values."""
        key = (metric, *labels)
        found: Metric | None = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    @classmethod
    def on(cls, registry: CollectorRegistry) -> RequestMetrics:
        """The metrics, registered in registry."""
        return cls(
            Counter(
                "pocket_http_requests",
                "Requests answered, by method, route (the URL rule, not the path) "
                "and status.",
                ["method", "route", "status"],
                registry=registry,
            ),
            Histogram(
                "pocket_http_request_duration_seconds",
                "Time from a request's arrival in the app to its answer, by route.",
                ["method", "route"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            Counter(
                "pocket_http_refusals",
                "Requests refused by a rule (409) or for their fields (422), by code.",
                ["status", "code"],
                registry=registry,
            ),
        )


def init_app(app: Flask, registry: CollectorRegistry) -> None:
    """Times, counts and logs every request; registry is what GET /metrics shows.

    Called before any other hook is added, so that the clock starts first.
    """
    metrics = RequestMetrics.on(registry)
    app.extensions["pocket.metrics"] = registry
    app.before_request(start_clock)

    def finish(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        count(metrics, method, route, response.status_code, seconds)
        log_access(method, route, response, seconds)
        return response

    app.after_request(finish)


def start_clock() -> None:
    """Notes when the request reached the app."""
    g.started = time.perf_counter()


def count(
    metrics: RequestMetrics, method: str, route: str, status: int, seconds: float
) -> None:
    """Counts and times an answered request; a refusal, by its code."""
    metrics.child(metrics.requests, method, route, str(status)).inc()
    metrics.child(metrics.latency, method, route).observe(seconds)
    code = g.get("error_code")
    if status in REFUSALS and code is not None:
        metrics.refusals.labels(str(status), code).inc()


def log_access(method: str, route: str, response: Response, seconds: float) -> None:
    """One line per request: its id, method, path, route, status and duration."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return  # Silenced (POCKET_LOG_LEVEL=WARNING): not even the path escaped.
    # The path as sent, escaped: a decoded %0A would start a forged log line.
    path = quote(request.path, safe="/:@!$&'()*+,;=-._~")
    # This hook runs last (Flask runs them in reverse), after the one that names
    # the answer: the id logged is the id the client got.
    request_id = response.headers.get("X-Request-Id")
    milliseconds = seconds * 1000
    ACCESS.info(
        "%s %s %d %.1f ms (request %s)",
        method,
        path,
        response.status_code,
        milliseconds,
        request_id,
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": response.status_code,
            "duration_ms": round(milliseconds, 3),
        },
    )
