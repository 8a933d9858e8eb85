"""Each request watched: counted and timed by route for GET /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram

# A label value per method a client may send would let clients grow the metrics
# without bound: any other method is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests take about a millisecond here: finer buckets than the library's.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# The refusals worth counting by code: the rules' (409) and the fields' (422).
REFUSALS = frozenset({HTTPStatus.CONFLICT, HTTPStatus.UNPROCESSABLE_ENTITY})
UNMATCHED = "unmatched"  # The route of a request no route took (404, 405).


@dataclass(frozen=True)
class RequestMetrics:
    """The HTTP metrics, in one app's registry."""

    requests: Counter
    latency: Histogram
    refusals: Counter

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
    """Times and counts every request; registry is what GET /metrics shows.

    Called before any other hook is added, so that the clock starts first.
    """
    metrics = RequestMetrics.on(registry)
    app.extensions["pocket.metrics"] = registry
    app.before_request(start_clock)

    def finish(response: Response) -> Response:
        record(metrics, response)
        return response

    app.after_request(finish)


def start_clock() -> None:
    """Notes when the request reached the app."""
    g.started = time.perf_counter()


def record(metrics: RequestMetrics, response: Response) -> None:
    """Counts and times the answered request."""
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    method = request.method if request.method in METHODS else "other"
    status = response.status_code
    metrics.requests.labels(method, route, str(status)).inc()
    metrics.latency.labels(method, route).observe(seconds)
    code = g.get("error_code")
    if status in REFUSALS and code is not None:
        metrics.refusals.labels(str(status), code).inc()
