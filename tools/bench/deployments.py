"""add_money as users run Pocket: `pocket serve` with its projection follower in
the process (what `make run` starts), then `pocket serve --no-follower` beside a
`pocket follow` process, then the faster deployment (nginx in front of granian,
beside a `pocket follow`: docs/deployment.md); side by side, each with its
processes' CPU per request (from /proc, from the start of the wrk run until the
projection has applied what it wrote) and, for `pocket follow`, its CPU per event
applied."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pocket.application import Pocket
from pocket.webhook_admin import Webhooks
from tools.bench.figures import Results, Sizes
from tools.bench.http_figures import answered, record, record_cpu
from tools.bench.servers import (
    beside_python,
    cpu_seconds,
    follower_process,
    group_cpu_seconds,
    server_process,
)
from tools.bench.slow_receiver import DELAY_SECONDS, slow_receiver
from tools.bench.watch import Projection
from tools.bench.wrk import Load, drive
from tools.front import granian_on_socket, nginx_command, nginx_front
from tools.scratch import free_port

FRONT_MISSING = (
    "nginx or granian not installed: apt-get install nginx, pip install granian "
    "(no figures for the deployment behind nginx)"
)


def deployments(
    pocket: Pocket, url: str, script: Path, sizes: Sizes, results: Results
) -> list[Load]:
    """add_money for the script's users on each way of running Pocket; the loads,
    for the money check."""
    projection = Projection(pocket)
    with server_process(url, follower=True) as (port, server):
        projection.wait_for(server)  # It catches up on what came before first.
        before = cpu_seconds(server.pid)
        loads = record(results, "http_default", drive([port], script, sizes))
        projection.wait_for(server)
        used = cpu_seconds(server.pid) - before
    record_cpu(results, "http_default_cpu_us", used, answered(loads))
    loads += with_slow_webhook(pocket, url, script, sizes, results)
    with follower_process(url) as follower, server_process(url) as (port, server):
        projection.wait_for(follower)
        start = projection.position()
        before, before_follower = cpu_seconds(server.pid), cpu_seconds(follower.pid)
        split = record(results, "http_split", drive([port], script, sizes))
        projection.wait_for(follower)
        used = cpu_seconds(server.pid) - before
        used_follower = cpu_seconds(follower.pid) - before_follower
        applied = projection.events_between(start, projection.position())
    record_cpu(results, "http_split_cpu_us", used, answered(split))
    record_cpu(results, "http_split_follow_cpu_us", used_follower, applied)
    return loads + split + behind_nginx(projection, url, script, sizes, results)


def behind_nginx(
    projection: Projection, url: str, script: Path, sizes: Sizes, results: Results
) -> list[Load]:
    """add_money through nginx to granian, beside a `pocket follow`: the rate, and
    the CPU per request of nginx's and granian's processes (each a process group:
    a master and its worker)."""
    if nginx_command() is None or beside_python("granian") is None:
        results.note(FRONT_MISSING)
        return []
    with (
        tempfile.TemporaryDirectory(prefix="pocket-bench-front-") as directory,
        follower_process(url) as follower,
    ):
        socket = Path(directory, "app.sock")
        port = free_port()
        with (
            granian_on_socket(url, socket) as app,
            nginx_front(socket, port, Path(directory, "nginx")) as front,
        ):
            projection.wait_for(follower)
            groups = (app.pid, front.pid)
            before = sum(group_cpu_seconds(group) for group in groups)
            loads = record(results, "http_front", drive([port], script, sizes))
            projection.wait_for(follower)
            used = sum(group_cpu_seconds(group) for group in groups) - before
    record_cpu(results, "http_front_cpu_us", used, answered(loads))
    return loads


def with_slow_webhook(
    pocket: Pocket, url: str, script: Path, sizes: Sizes, results: Results
) -> list[Load]:
    """The default server again, while a subscription to every event waits on a
    slow receiver (each delivery answered after half a second): its deliveries
    queue up, and the API must not slow down (docs/webhooks.md)."""
    webhooks = Webhooks.of(pocket)
    with slow_receiver() as hook:
        subscription = webhooks.subscribe(hook).subscription
        try:
            with server_process(url, follower=True) as (port, server):
                Projection(pocket).wait_for(server)
                loads = record(
                    results, "http_default_webhook", drive([port], script, sizes)
                )
                queued = webhooks.status(subscription.id).queue
        finally:
            webhooks.unsubscribe(subscription.id)
    results.note(
        f"slow receiver: {queued.pending:,} deliveries still queued as the run "
        "ended (each answered after "
        f"{DELAY_SECONDS:g}s)"
    )
    return loads
