"""add_money as users run Pocket: `pocket serve` with its projection follower in
the process (what `make run` starts), then `pocket serve --no-follower` beside a
`pocket follow` process; side by side, each with its processes' CPU per request
(from /proc, from the start of the wrk run until the projection has applied
what it wrote) and, for `pocket follow`, its CPU per event applied."""

from __future__ import annotations

from pathlib import Path

from pocket.application import Pocket
from tools.bench.figures import Results, Sizes
from tools.bench.http_figures import answered, record, record_cpu
from tools.bench.servers import cpu_seconds, follower_process, server_process
from tools.bench.watch import Projection
from tools.bench.wrk import Load, drive


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
    return loads + split
