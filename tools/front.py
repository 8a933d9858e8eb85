"""The faster deployment, started for a block: Pocket's WSGI app (pocket.wsgi)
under granian on a unix socket, and nginx in front of it with deploy/nginx.conf
(docs/deployment.md, "Behind nginx, on granian (faster)").

It lives among the tools, as scratch.py does, because the end-to-end tests run
it and the benchmark may measure it; neither imports the other's infrastructure.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket as sockets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "deploy" / "nginx.conf"
DEBIAN_NGINX = "/usr/sbin/nginx"
# The two lines an operator edits, found by their EDIT marks.
LISTEN = re.compile(r"^(\s*)listen \S+;(\s*# EDIT.*)$", re.M)
UPSTREAM = re.compile(r"^(\s*)server unix:\S+;(\s*# EDIT.*)$", re.M)


def granian_command(socket: Path, threads: int = 16) -> list[str]:
    """granian serving pocket.wsgi:app on the socket, as docs/deployment.md says:
    the command that was measured and attacked behind nginx (without
    --backpressure, which that setup did not keep)."""
    return [
        str(Path(sys.executable).with_name("granian")),
        "--interface=wsgi",
        "--factory",
        f"--uds={socket}",
        # 0666 (438): whoever reaches the folder may connect; the folder is what
        # keeps others out (see nginx_front).
        "--uds-permissions=438",
        f"--blocking-threads={threads}",
        "--no-ws",
        "--http=1",
        "--http1-header-read-timeout=10000",
        "--log-level=warning",
        "pocket.wsgi:app",
    ]


@contextlib.contextmanager
def granian_on_socket(
    database_url: str, socket: Path, threads: int = 16
) -> Iterator[subprocess.Popen[bytes]]:
    """granian serving Pocket on the database, on the unix socket, once it answers
    GET /health there; its output in granian.log beside the socket. Stopped after
    the block, with every process of its group (its workers)."""
    # A socket left by a granian killed with -9 would make the bind fail.
    socket.unlink(missing_ok=True)
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in ("POCKET_DATABASE_URL", "PERSISTENCE_MODULE")
    }
    env = {
        **inherited,
        "POCKET_DATABASE_URL": database_url,
        "POCKET_LOG_LEVEL": "WARNING",
        # Every request comes from nginx's address: nginx limits sign-ups.
        "POCKET_SIGNUP_RATE": "off",
    }
    log = socket.parent / "granian.log"
    with process_group(granian_command(socket, threads), env, log) as granian:
        wait_until(lambda: answers_on_socket(socket), granian, "granian")
        yield granian


def nginx_command() -> str | None:
    """nginx's program (Debian's, or the PATH's), or None when it is not installed."""
    if os.access(DEBIAN_NGINX, os.X_OK):
        return DEBIAN_NGINX
    return shutil.which("nginx")


def render_config(socket: Path, port: int) -> str:
    """deploy/nginx.conf with its two EDIT lines set: this port, on 127.0.0.1, and
    the socket."""
    text, listens = LISTEN.subn(rf"\1listen 127.0.0.1:{port};\2", CONFIG.read_text())
    text, upstreams = UPSTREAM.subn(rf"\1server unix:{socket};\2", text)
    assert (listens, upstreams) == (1, 1), "deploy/nginx.conf lost an EDIT line"
    return text


@contextlib.contextmanager
def nginx_front(
    socket: Path, port: int, directory: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground with deploy/nginx.conf, listening on 127.0.0.1:port
    and passing to the socket, its prefix (temp folders, pid, error.log) in the
    directory; once GET /health answers through it. Stopped after the block."""
    nginx = nginx_command()
    if nginx is None:
        msg = "nginx is not installed"
        raise RuntimeError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(render_config(socket, port))
    settings = f"daemon off; pid {directory / 'nginx.pid'};"
    if os.geteuid() == 0:
        # Started as root, nginx runs its worker as `nobody`, which could not
        # enter the folders the socket and the temp files are in (pytest's are
        # 0700, as a private folder should be). Keeping the worker as the user
        # that started it keeps those folders private and the socket in them
        # unreachable to others, rather than opening the folders to everyone.
        # In production the operator gives nginx's user the socket's folder.
        settings += " user root;"
    command = [nginx, "-p", f"{directory}/", "-c", str(config)]
    command += ["-e", str(directory / "error.log"), "-g", settings]
    with process_group(command, {**os.environ}, directory / "nginx.out") as front:
        wait_until(lambda: answers_on_port(port), front, "nginx")
        yield front


@contextlib.contextmanager
def process_group(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a process group of its own, its output appended to log; the
    whole group killed after the block, however it ends."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group; SIGKILL to whatever is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    # Workers that outlived their parent.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_until(
    answers: Callable[[], bool],
    process: subprocess.Popen[bytes],
    name: str,
    timeout: float = 60,
) -> None:
    """Waits until answers() is true; raises, naming the process, if it exits
    first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if answers():
            return
        time.sleep(0.1)
    msg = f"{name} did not start (exit code {process.poll()}): {process.args!r}"
    raise RuntimeError(msg)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as nginx talks to granian."""

    def __init__(self, path: Path, timeout: float = 2) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def answers_on_socket(path: Path) -> bool:
    """Does GET /health answer 200 on the unix socket?"""
    return health(UnixHTTPConnection(path))


def answers_on_port(port: int) -> bool:
    """Does GET /health answer 200 on 127.0.0.1:port?"""
    return health(http.client.HTTPConnection("127.0.0.1", port, timeout=2))


def health(connection: http.client.HTTPConnection) -> bool:
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
