"""A throwaway PgBouncer in front of a PostgreSQL server, for tests of Pocket behind
a connection pooler.

Like tests.pgserver's servers: the machine's pgbouncer binary (Debian's), a
configuration the test writes into a temporary folder, a free port on 127.0.0.1,
run as the `postgres` user (pgbouncer refuses to run as root), all of it gone
afterwards whatever happened. Every database name is passed through to the
PostgreSQL server behind it, so a scratch database needs no configuration.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import psycopg

from tests.pgserver import OWNER, as_owner, own, owner_problem
from tools.scratch import free_port

PoolMode = Literal["session", "transaction", "statement"]

# Debian installs it outside a normal user's PATH.
BINARY_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    candidates = [found] if found else []
    candidates += BINARY_CANDIDATES
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def pgbouncer_problem() -> str | None:
    """Why no throwaway PgBouncer can be started here, or None when one can."""
    if find_pgbouncer() is None:
        return "no pgbouncer on this machine (Debian: apt-get install pgbouncer)"
    return owner_problem()


class PgBouncer:
    """One PgBouncer in a folder of its own, on a port of its own, in front of
    one PostgreSQL server."""

    def __init__(
        self,
        folder: Path,
        binary: Path,
        port: int,
        target: tuple[str, int],
        pool_mode: PoolMode,
        settings: Mapping[str, str],
    ) -> None:
        self.folder = folder
        self.binary = binary
        self.port = port
        self.target = target
        self.pool_mode = pool_mode
        self.settings = settings
        self.ini = folder / "pgbouncer.ini"
        self.log = folder / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url_for(self, database: str, user: str = OWNER) -> str:
        """A URL that reaches one database of the server through this pooler."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def is_running(self) -> bool:
        """Whether the pgbouncer process is alive."""
        return self._process is not None and self._process.poll() is None

    def configure(self) -> None:
        """Writes the configuration: every database to the target server, trust
        authentication for the users of the auth_file (OWNER alone), OWNER as
        the admin of the `pgbouncer` console database."""
        own(self.folder)
        host, port = self.target
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",  # TCP only: nothing left in /tmp
            "auth_type": "trust",  # "The user name must still exist in auth_file"
            "auth_file": str(self.folder / "userlist.txt"),
            "admin_users": OWNER,
            "pool_mode": self.pool_mode,
            "default_pool_size": "20",
            "max_client_conn": "200",
            "logfile": str(self.log),
            "pidfile": str(self.folder / "pgbouncer.pid"),
            **self.settings,
        }
        lines = [
            "[databases]",
            f"* = host={host} port={port}",
            "[pgbouncer]",
            *(f"{name} = {value}" for name, value in settings.items()),
        ]
        self.ini.write_text("\n".join(lines) + "\n")
        (self.folder / "userlist.txt").write_text(f'"{OWNER}" ""\n')
        for path in (self.ini, self.folder / "userlist.txt"):
            own(path)

    def start(self, timeout: float = 30) -> None:
        """Starts pgbouncer in the foreground (this process's child) and waits
        until a client can reach the server through it."""
        with (self.folder / "stdout.log").open("ab") as out:
            self._process = subprocess.Popen(
                as_owner([str(self.binary), str(self.ini)]),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C is for pytest, not for it
            )
        deadline = time.monotonic() + timeout
        while self.is_running and time.monotonic() < deadline:
            try:
                # autocommit: statement mode refuses a transaction block.
                url = self.url_for("postgres")
                with psycopg.connect(url, connect_timeout=2, autocommit=True) as c:
                    c.execute("SELECT 1")
            except psycopg.OperationalError:
                time.sleep(0.05)
            else:
                return
        self.stop()
        msg = f"PgBouncer did not start within {timeout}s:\n{self.log_tail()}"
        raise RuntimeError(msg)

    def stop(self, timeout: float = 10) -> None:
        """Shuts pgbouncer down (SIGTERM: at once, closing every connection);
        kills it if it will not go."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def show(self, what: str) -> list[dict[str, Any]]:
        """A SHOW command of the admin console (POOLS, SERVERS, CLIENTS, ...)."""
        with psycopg.connect(self.url_for("pgbouncer"), autocommit=True) as conn:
            cursor = conn.execute(f"SHOW {what}", prepare=False)
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log_tail(self, lines: int = 20) -> str:
        """The end of pgbouncer's log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        return ""

    def destroy(self) -> None:
        """Stops pgbouncer however it can, and removes its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_pgbouncer(
    target_port: int,
    pool_mode: PoolMode,
    *,
    target_host: str = "127.0.0.1",
    settings: Mapping[str, str] | None = None,
) -> Iterator[PgBouncer]:
    """A running PgBouncer in a new temporary folder, on a free port, pooling in
    pool_mode for the server at target_host:target_port (settings add to or
    override its configuration); stopped and removed afterwards, whatever
    happened in between."""
    binary = find_pgbouncer()
    if binary is None:
        msg = "no pgbouncer"
        raise RuntimeError(msg)
    folder = Path(tempfile.mkdtemp(prefix="pocket-pgbouncer-"))
    bouncer = PgBouncer(
        folder,
        binary,
        free_port(),
        (target_host, target_port),
        pool_mode,
        settings or {},
    )
    try:
        bouncer.configure()
        bouncer.start()
        yield bouncer
    finally:
        bouncer.destroy()
