"""How far behind its primary a standby is while Pocket writes: the figures in
docs/replicas.md.

Builds a throwaway primary and streaming standby from the machine's PostgreSQL
binaries (tests/pgserver.py), starts `pocket serve` with POCKET_READ_URL on the
standby, drives add_money with wrk, and samples what the read router reports
(`GET /admin/status`, `reads.lag_seconds`) four times a second.

    .venv/bin/python -m tools.replica_lag [--async] [--seconds 15]
        [--connections 32]

Run from the checkout (it uses the tests' helpers). Needs wrk and the
PostgreSQL server binaries (run as root, it runs them as the postgres user).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.e2e.processes import Api, serve
from tests.pgserver import replicated_pair
from tests.web.test_ledger_api import ADMIN_TOKEN


def reads(api: Api) -> dict[str, Any]:
    """What /admin/status says about the reads that may lag."""
    status, body = api.as_user(ADMIN_TOKEN).get("/admin/status")
    assert status == 200, body
    state: dict[str, Any] = body["reads"]
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with (
        replicated_pair(synchronous=not args.asynchronous) as (primary, standby),
        tempfile.TemporaryDirectory() as folder,
    ):
        env = {
            "POCKET_DATABASE_URL": primary.create_database("pocket"),
            "POCKET_READ_URL": standby.url_for("pocket"),
            "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        process, api = serve(Path(folder), env)
        try:
            _, body = api.post("/users", {"name": "load"})
            user, token = body["user"]["id"], body["token"]
            script = Path(folder) / "add_money.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.body = \'{"amount": "1", "source": "load"}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {token}"\n'
            )
            samples: list[dict[str, Any]] = []
            stopping = threading.Event()

            def sample() -> None:
                while not stopping.is_set():
                    samples.append(reads(api))
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample)
            sampler.start()
            load = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "-s",
                    str(script),
                    f"{api.base_url}/users/{user}/add_money",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            stopping.set()
            sampler.join()
        finally:
            process.close()
    rate = next(line for line in load.splitlines() if "Requests/sec" in line)
    lags = sorted(s["lag_seconds"] for s in samples if s["lag_seconds"] is not None)
    on_primary = sum(s["served_by"] == "primary" for s in samples)
    kind = "asynchronous" if args.asynchronous else "synchronous"
    print(
        f"{kind} standby, add_money {rate.split()[-1]}/s: {len(samples)} samples, "
        f"lag p50 {lags[len(lags) // 2]:.3f} s, max {lags[-1]:.3f} s; "
        f"{on_primary} sample(s) sent the reads to the primary"
    )


if __name__ == "__main__":
    main()
