"""One benchmark run: a new database for each backend, every measurement on it
in order, then the ratios each target is stated in."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pocket.bootstrap import open_pocket
from pocket.config import Settings
from tools.bench.baselines import raw_baselines
from tools.bench.commands import python_api
from tools.bench.figures import Results, Sizes
from tools.bench.history import history
from tools.bench.http_load import http_api
from tools.bench.live import live_follower
from tools.bench.projection import projection, rebuild, write_events
from tools.scratch import DEFAULT_ADMIN_URL, scratch_postgres


def run(
    sizes: Sizes,
    backends: list[str],
    admin_url: str = DEFAULT_ADMIN_URL,
    out: Callable[[str], None] = print,
) -> list[Results]:
    """Runs every measurement on every backend; returns the figures."""
    results = []
    for backend in backends:
        out(f"Measuring {backend}...")
        with database(backend, admin_url) as url:
            results.append(measure(backend, url, sizes, out, admin_url))
    return results


@contextlib.contextmanager
def database(backend: str, admin_url: str) -> Iterator[str]:
    """A new, empty database for one backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pocket-bench-") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    with scratch_postgres(admin_url, "pocket_bench") as url:
        yield url


def measure(
    backend: str,
    url: str,
    sizes: Sizes,
    out: Callable[[str], None],
    admin_url: str = DEFAULT_ADMIN_URL,
) -> Results:
    """Every figure for one backend, on one database (and, for the library's
    shape, on a database of its own on admin_url's server)."""
    results = Results(backend)
    settings = Settings.from_url(url)
    raw_baselines(settings, url, sizes, results)
    out("  raw baselines done")
    pocket = open_pocket(settings)
    try:
        python_api(pocket, sizes, results)
        out("  Python API done")
        http_api(pocket, url, sizes, results, admin_url)
        out("  HTTP done")
        live_follower(pocket, url, sizes, results)
        out("  live follower done")
        write_events(pocket, sizes.events)
        projection(pocket, sizes, results)
        out("  catch-up done")
        rebuild(url, results)
        out("  rebuild done")
        history(pocket, url, sizes, results)
        out("  history done")
    finally:
        pocket.close()
    ratios(results)
    for line in results.notes:  # Said as well as printed: --json prints no notes.
        out(f"  {line}")
    return results


def ratios(results: Results) -> None:
    """The ratios each target is stated in."""
    f = results.figures
    pairs = {
        "commands_16_vs_raw": ("commands_16", "raw_insert_commits"),
        "http_add_money_vs_raw": ("http_add_money", "raw_insert_commits"),
        "http_ratio": ("http_add_money", "http_trivial"),
        "http_flask_ratio": ("http_flask", "http_trivial"),
        "http_add_money_vs_library": ("http_add_money", "http_library"),
        "http_default_vs_library": ("http_default", "http_library"),
        "http_default_cpu_vs_library": ("http_default_cpu_us", "http_library_cpu_us"),
        "http_split_vs_library": ("http_split", "http_library"),
        "http_default_vs_split": ("http_default", "http_split"),
        "http_webhook_vs_default": ("http_default_webhook", "http_default"),
        "http_front_vs_default": ("http_front", "http_default"),
        "http_front_cpu_vs_default": ("http_front_cpu_us", "http_default_cpu_us"),
        "http_two_processes_ratio": ("http_two_processes", "http_add_money_2000"),
        "http_two_routed_ratio": ("http_two_routed", "http_add_money_2000"),
        "http_granian_ratio": ("http_granian", "http_add_money"),
        "catchup_ratio": ("catchup", "catchup_per_event"),
        "follow_live_cpu_ratio": ("follow_live_cpu_us", "followers_catchup_cpu_us"),
        "follow_live_vs_projection": ("follow_live_cpu_us", "catchup_cpu_us"),
        "latency_ratio": ("latency_large", "latency_small"),
        "page_ratio": ("page_end", "page_start"),
    }
    for key, (top, bottom) in pairs.items():
        # A top of 0 is a figure (a CPU time under /proc's 10 ms resolution).
        if top in f and f.get(bottom):
            f[key] = f[top] / f[bottom]
