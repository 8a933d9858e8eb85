"""A throwaway PostgreSQL server, for tests that stop, kill or restart the database.

The server at POCKET_TEST_POSTGRES_URL belongs to whoever runs the tests (on a
developer's machine, their own), so the suite never stops it. A fault test starts
one of these instead: the machine's PostgreSQL binaries, a data directory in a
temporary folder, its own port on 127.0.0.1, all of it gone afterwards.

A server is a data directory plus a port. `initdb()` makes the directory; the
port, the address and the socket directory are given at each start, not written
into the directory, so that a later streaming standby can be another server whose
directory comes from `pg_basebackup -R` of this one and starts the same way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql

from pocket.bench import free_port

OWNER = "postgres"  # initdb and postgres refuse to run as root

# Speed over what only a machine crash would test. A commit must still reach the
# kernel before it is acknowledged (synchronous_commit stays on), or a kill -9 of
# the server would lose acknowledged writes and fault tests would fail for it.
FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
}

StopMode = Literal["fast", "immediate"]


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: pg_config's answer, or the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off the PATH)."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        answer = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(answer.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=_version, reverse=True)
    return next((path for path in candidates if _has_binaries(path)), None)


def _version(bindir: Path) -> tuple[int, ...]:
    words = bindir.parent.name.split(".")
    return tuple(int(word) for word in words if word.isdigit())


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def server_problem() -> str | None:
    """Why no throwaway server can be started here, or None when one can."""
    if find_bindir() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl, postgres) on this machine"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            return f"running as root and there is no {OWNER!r} user to run PostgreSQL"
        if shutil.which("setpriv") is None:
            return f"running as root and no setpriv to run PostgreSQL as {OWNER!r}"
    return None


class PostgresServer:
    """One PostgreSQL server in a folder of its own, on a port of its own."""

    def __init__(self, folder: Path, bindir: Path, port: int) -> None:
        self.folder = folder
        self.bindir = bindir
        self.port = port
        self.data = folder / "data"
        self.sockets = folder / "sockets"
        self.log = folder / "postgres.log"
        self._postmaster: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The superuser's URL for the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The superuser's URL for one database on this server."""
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    @property
    def is_running(self) -> bool:
        """Whether the postmaster is alive."""
        return self._postmaster is not None and self._postmaster.poll() is None

    @property
    def postmaster_pid(self) -> int | None:
        """The running postmaster's process id, or None."""
        return self._postmaster.pid if self._postmaster and self.is_running else None

    def initdb(self) -> None:
        """A new cluster in the folder: trust authentication, fast settings."""
        self._own(self.folder)
        self.sockets.mkdir(exist_ok=True)
        self._own(self.sockets)
        self._run(
            "initdb",
            *("--pgdata", str(self.data), "--username", OWNER, "--auth", "trust"),
            *("--encoding", "UTF8", "--no-locale", "--no-sync"),
        )
        lines = [f"{name} = '{value}'" for name, value in FAST_SETTINGS.items()]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# Pocket's tests\n" + "\n".join(lines) + "\n")

    def start(self, timeout: float = 60) -> None:
        """Starts the server and waits until it accepts connections."""
        # The postmaster is this process's own child (not pg_ctl's, which would
        # leave it to init): after a kill -9 it is reaped at once, and no zombie
        # holding its pid makes the next start think it still runs.
        postgres = [str(self.bindir / "postgres"), "-D", str(self.data)]
        where = ["-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.sockets)]
        with self.log.open("ab") as log:
            self._postmaster = subprocess.Popen(
                self._as_owner([*postgres, *where]),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C is for pytest, not for it
            )
        self._wait_until_ready(timeout)

    def stop(self, mode: StopMode = "fast", timeout: float = 60) -> None:
        """Shuts the server down: `fast` cleanly, `immediate` without a checkpoint
        (it recovers at the next start, as after a crash)."""
        self._run(
            "pg_ctl",
            *("stop", "--pgdata", str(self.data), "--mode", mode, "--wait"),
            *("--timeout", str(int(timeout))),
        )
        if self._postmaster is not None:
            self._postmaster.wait(timeout)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stops, then starts again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self, timeout: float = 30) -> None:
        """kill -9 of the postmaster, as a crash would; returns once its backends
        have gone too, so the next start() finds no one holding its shared memory."""
        if self._postmaster is None or not self.is_running:
            return
        children = _children(self._postmaster.pid)
        self._postmaster.kill()
        self._postmaster.wait(timeout)
        _wait_gone(children, timeout)

    def create_database(self, name: str) -> str:
        """A new, empty database on this server, and its URL. (It goes with the
        folder: nothing needs to drop it.)"""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        return ""

    def destroy(self) -> None:
        """Stops the server however it can, and removes its folder."""
        if self.is_running:
            try:
                self.stop("immediate", timeout=30)
            except subprocess.SubprocessError:
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_running and time.monotonic() < deadline:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
            except psycopg.OperationalError:
                time.sleep(0.05)  # starting up, or recovering from a crash
            else:
                return
        self.kill()
        msg = f"PostgreSQL did not start within {timeout}s:\n{self.log_tail()}"
        raise RuntimeError(msg)

    def _run(self, binary: str, *args: str) -> None:
        command = self._as_owner([str(self.bindir / binary), *args])
        # The folder as working directory: the caller's may be closed to OWNER.
        subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, check=True
        )

    def _as_owner(self, command: list[str]) -> list[str]:
        """The command as OWNER when we are root; setpriv execs rather than
        forks, so the process started is the command itself."""
        if os.geteuid() != 0:
            return command
        user = ["--reuid", OWNER, "--regid", OWNER, "--init-groups"]
        return ["setpriv", *user, "--", *command]

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, OWNER, OWNER)


@contextlib.contextmanager
def throwaway_server(bindir: Path | None = None) -> Iterator[PostgresServer]:
    """A running server in a new temporary folder; stopped and removed afterwards,
    whatever happened in between."""
    found = bindir or find_bindir()
    if found is None:
        msg = "no PostgreSQL binaries"
        raise RuntimeError(msg)
    folder = Path(tempfile.mkdtemp(prefix="pocket-pg-"))
    server = PostgresServer(folder, found, free_port())
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.destroy()


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (the postmaster's backends, its workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped yet does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Waits for the processes to end; kills the ones that will not."""
    deadline = time.monotonic() + timeout
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # A backend that missed its postmaster's death: finish the crash.
    for pid in filter(_alive, pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
