"""The benchmark runs, on tiny sizes, on both stores. (It checks that the figures
are there, never how fast they are: speed is for `make bench` to report.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_URL, require_postgres
from tools.bench.figures import TINY
from tools.bench.http_load import FEW_USERS, MANY_USERS, WRK_MISSING
from tools.bench.report import FRONT_ONLY, HTTP_ROWS, POSTGRES_ONLY, ROWS, report
from tools.bench.run import run
from tools.bench.wrk import wrk_command
from tools.front import nginx_command

# CI installs wrk: there, a missing wrk must fail, not leave out the HTTP figures.
REQUIRE_WRK = os.environ.get("POCKET_REQUIRE_WRK") == "1"
# And nginx: there, the deployment behind nginx must be measured too.
REQUIRE_NGINX = os.environ.get("POCKET_REQUIRE_NGINX") == "1"
# Figures that may be 0 on tiny sizes: a follower that kept up when sampled, or
# a follower's CPU under /proc's resolution (10 ms) over a few hundred events.
MAY_BE_ZERO = {
    "follow_live_lag_events",
    "follow_live_lag_ms",
    "follow_live_cpu_us",
    "follow_live_cpu_ratio",
    "follow_live_vs_projection",
    "http_split_follow_cpu_us",
    "http_front_cpu_us",
    "http_front_cpu_vs_default",
}


def expected_figures(backend: str) -> set[str]:
    """Every figure (the library's shape only on PostgreSQL); without wrk (and
    unless it is required), all but HTTP's."""
    every = {key for key, _, _ in ROWS}
    if backend != "postgres":
        every -= POSTGRES_ONLY
    if nginx_command() is None:
        if REQUIRE_NGINX:
            pytest.fail("POCKET_REQUIRE_NGINX=1 but nginx is not installed")
        every -= FRONT_ONLY
    if wrk_command() is not None:
        return every
    if REQUIRE_WRK:
        pytest.fail("POCKET_REQUIRE_WRK=1 but wrk is not installed")
    return every - {key for key, _, _ in HTTP_ROWS}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_figure_is_measured_on_tiny_sizes(backend: str) -> None:
    if backend == "postgres":
        require_postgres()
    expected = expected_figures(backend)
    (results,) = run(TINY, [backend], ADMIN_URL, out=lambda _: None)
    left_out = [line for line in results.notes if "left out" in line]
    assert not left_out
    assert set(results.figures) == expected
    assert all(
        value > 0 or (key in MAY_BE_ZERO and value == 0)
        for key, value in results.figures.items()
    )
    table = report([results], TINY)
    for _, label, _ in ROWS:
        assert label in table
    if "http_library" in expected:
        accounts = f"the library's {FEW_USERS} accounts"
        assert f"{backend}: money checked: {accounts}" in table
    if "http_add_money" in expected:
        users = FEW_USERS + MANY_USERS
        assert f"{backend}: money checked: the {users:,} users'" in table
    else:
        assert f"{backend}: {WRK_MISSING}" in table


def test_the_bench_prints_json_for_machines() -> None:
    command = ["tools.bench", "--tiny", "--backend", "sqlite", "--json"]
    answer = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures = json.loads(answer.stdout)["sqlite"]
    assert figures["commands_16"] > 0
    assert figures["commands_hot"] > 0
    assert figures["rebuild_peak_mb"] > 0
    assert figures["follow_live_rate"] > 0
    if wrk_command() is not None:
        assert figures["http_add_money_p99"] > 0
        assert figures["http_default"] > 0
        assert figures["http_split"] > 0
