"""A throwaway RabbitMQ server, for tests that stop, kill or restart the broker.

The broker at 127.0.0.1:5672 is the machine's: the suite creates and deletes its
own exchanges and queues there, and never stops it. A fault test starts one of
these instead: Debian's rabbitmq-server run directly (not through the wrapper that
switches to the rabbitmq user), with a node name, ports, data, logs, config,
plugins (none: no management plugin) and Erlang cookie of its own in a temporary
folder, all gone afterwards. A restart keeps its data: durable exchanges and
queues, and the persistent messages in them, are there again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions

from tests.proctree import children, kill_tree, wait_gone
from tools.scratch import free_port

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
# Measured here: a node starts in about 5 seconds, a restart on its data as fast.
START_TIMEOUT = 60.0


def rabbitmq_problem() -> str | None:
    """Why no throwaway broker can be started here, or None when one can."""
    if not RABBITMQ_SERVER.exists():
        return f"no {RABBITMQ_SERVER} (Debian's rabbitmq-server package)"
    return None


class RabbitServer:
    """One node in a folder of its own, on ports of its own."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"pockettest{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        home = base / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_LOGS": str(base / "log" / "rabbit.log"),
        }
        self.env.pop("ERL_FLAGS", None)

    @property
    def url(self) -> str:
        """Its AMQP URL (guest may connect from 127.0.0.1)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Starts the node and returns once it takes AMQP connections."""
        assert self.process is None or self.process.poll() is not None
        output = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log = (self.base / "server.out").read_text(errors="replace")
                msg = f"RabbitMQ did not start on {self.port}:\n{log[-3000:]}"
                raise RuntimeError(msg)
            time.sleep(0.2)

    def answers(self) -> bool:
        """Whether it takes an AMQP connection now."""
        try:
            parameters = pika.URLParameters(self.url)
            parameters.socket_timeout = 1
            parameters.stack_timeout = 2
            pika.BlockingConnection(parameters).close()
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True

    def stop(self, timeout: float = 30) -> None:
        """Stops the node as its service would (SIGTERM to the Erlang VM),
        waiting until it has gone."""
        if self.process is None or self.process.poll() is not None:
            return
        vm = children(self.process.pid)
        for pid in vm:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        wait_gone(vm, timeout)

    def kill(self) -> None:
        """kill -9 of the node and everything it started."""
        if self.process is None or self.process.poll() is not None:
            return
        kill_tree(self.process.pid)
        self.process.wait(10)

    def restart(self) -> None:
        """Stops and starts it again, on the same data and ports."""
        self.stop()
        self.start()


@contextlib.contextmanager
def throwaway_rabbitmq() -> Iterator[RabbitServer]:
    """A running node in a new temporary folder; stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="pocket-rabbitmq-"))
    server = RabbitServer(base)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)
