"""The benchmark runs, on tiny sizes, on both stores. (It checks that the figures
are there, never how fast they are: speed is for `pocket bench` to report.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pocket.bench import ROWS, TINY, report, run
from tests.conftest import ADMIN_URL, require_postgres


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_figure_is_measured_on_tiny_sizes(backend: str) -> None:
    if backend == "postgres":
        require_postgres()
    (results,) = run(TINY, [backend], ADMIN_URL, out=lambda _: None)
    assert set(results.figures) == {key for key, _, _ in ROWS}
    assert all(value > 0 for value in results.figures.values())
    table = report([results], TINY)
    for _, label, _ in ROWS:
        assert label in table


def test_pocket_bench_prints_json_for_machines() -> None:
    command = ["pocket.cli", "bench", "--tiny", "--backend", "sqlite", "--json"]
    answer = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures = json.loads(answer.stdout)["sqlite"]
    assert figures["commands_16"] > 0
    assert figures["rebuild_peak_mb"] > 0
