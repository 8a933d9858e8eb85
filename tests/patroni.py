"""A Patroni cluster of the test's own: one etcd, two PostgreSQL nodes managed by
Patroni in synchronous mode, and HAProxy routing to whichever is the primary,
all from the machine's binaries, on free ports, in one temporary folder that
goes with everything in it afterwards, whatever happened (`patroni_cluster()`).

Each node reaches etcd, and is reached by the other node (streaming replication
from its connect_address, Patroni's REST calls), through a tests.proxy.Proxy of
its own; `PatroniNode.cut_off()` makes those three fall silent, as a network
partition would, while clients (Pocket, HAProxy's health checks) still reach
its PostgreSQL and REST ports directly. Proxies, not network namespaces: they
need no privilege and no network set-up, they run the same on a developer's
machine and in CI, and a silent proxy drops traffic as a partition does.

Patroni runs as the `postgres` user (PostgreSQL refuses root), under
tests/subreaper.py so that a killed postmaster is reaped and Patroni sees it
die. The configuration is tests.patroni_config's, with TEST_TIMING.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.patroni_config import (
    TEST_TIMING,
    Node,
    Site,
    Timing,
    haproxy_cfg,
    patroni_yaml,
)
from tests.pgserver import OWNER, PostgresServer, find_bindir, server_problem
from tests.proctree import alive, kill_postmaster, kill_tree, wait_gone
from tests.proxy import Proxy
from tools.scratch import free_port

SUBREAPER = Path(__file__).with_name("subreaper.py")
BINARIES = {"patroni": "patroni", "etcd": "etcd", "haproxy": "haproxy"}
# Only these reach Patroni and etcd from the test's environment: a PG* variable
# a test sets for the code it tests must not steer Patroni's own connections.
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ")


def patroni_problem() -> str | None:
    """Why no Patroni cluster can be started here, or None when one can."""
    problem = server_problem()
    if problem is not None:
        return problem
    missing = [name for name in BINARIES.values() if shutil.which(name) is None]
    if missing:
        packages = "Debian's patroni, etcd-server and haproxy"
        return f"no {', '.join(missing)} on this machine ({packages})"
    return None


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Waits until check() is true; raises with what was awaited otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = f"Timed out after {timeout}s waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(0.1)


def http_json(url: str, timeout: float = 2) -> tuple[int, dict[str, Any]] | None:
    """A GET's status and JSON body, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (OSError, ValueError):
        return None


class Daemon:
    """A program running in the background, its output in a file, stopped by a
    kill -9 of it and of everything it started."""

    def __init__(self, program: str, folder: Path) -> None:
        self.log = folder / f"{program}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C is for pytest, not for it
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
            return f"--- {self.log.name}:\n" + "\n".join(text)
        return ""

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process.wait(30)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a daemon: the test's own PATH and locale only."""
    kept = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    return {**kept, **extra}


class Etcd(Daemon):
    """A single-member etcd cluster."""

    def __init__(self, folder: Path) -> None:
        super().__init__("etcd", folder)
        self.folder = folder
        self.port = free_port()
        self.peer_port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        client, peer = f"http://{self.address}", f"http://127.0.0.1:{self.peer_port}"
        self.run(
            [
                *("etcd", "--name", "pocket", "--data-dir", str(self.folder / "data")),
                *("--listen-client-urls", client, "--advertise-client-urls", client),
                *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                *("--initial-cluster", f"pocket={peer}"),
                *("--initial-cluster-state", "new"),
            ],
            self.folder,
            clean_env(),
        )
        wait_until(self.healthy, timeout, f"etcd on {self.address}\n{self.log_tail()}")

    def healthy(self) -> bool:
        answer = http_json(f"http://{self.address}/health")
        return answer is not None and answer[1].get("health") == "true"


class PatroniNode(Daemon):
    """One PostgreSQL server under a Patroni of its own."""

    def __init__(
        self, name: str, folder: Path, bindir: Path, etcd: Etcd, timing: Timing
    ) -> None:
        super().__init__("patroni", folder)
        self.folder = folder
        self.timing = timing
        # PostgreSQL itself, to connect to and query: Patroni starts and stops it.
        self.postgres = PostgresServer(folder, bindir, free_port())
        self.rest_port = free_port()
        # What the other node and etcd see of this one; cut_off() silences them.
        self.replication_link = Proxy("127.0.0.1", self.postgres.port)
        self.rest_link = Proxy("127.0.0.1", self.rest_port)
        self.etcd_link = Proxy("127.0.0.1", etcd.port)
        self.config = Node(
            name=name,
            postgres_listen=f"127.0.0.1:{self.postgres.port}",
            postgres_connect=f"127.0.0.1:{self.replication_link.port}",
            rest_listen=f"127.0.0.1:{self.rest_port}",
            rest_connect=f"127.0.0.1:{self.rest_link.port}",
            data_dir=str(self.postgres.data),
            pgpass=str(folder / "pgpass"),
            sockets=str(self.postgres.sockets),
        )
        self.site = Site(
            bin_dir=str(bindir),
            etcd_hosts=f"127.0.0.1:{self.etcd_link.port}",
            network="127.0.0.1/32",
            auth="trust",
            superuser_password="unused-with-trust",
            replication_password="unused-with-trust",
            watchdog="off",  # a watchdog would reset the test machine itself
        )
        self.pidfile = folder / "patroni.pid"

    @property
    def name(self) -> str:
        return self.config.name

    def start(self) -> None:
        """Starts Patroni, which initialises or clones, then runs, PostgreSQL."""
        for path in (self.folder, self.postgres.sockets):
            path.mkdir(exist_ok=True)
            shutil.chown(path, OWNER, OWNER)
        config = self.folder / "patroni.yml"
        config.write_text(patroni_yaml(self.site, self.config, self.timing))
        reaper = [sys.executable, str(SUBREAPER), str(self.pidfile)]
        as_owner = ["setpriv", "--reuid", OWNER, "--regid", OWNER, "--init-groups"]
        self.run(
            [*reaper, *as_owner, "--", "patroni", str(config)],
            self.folder,
            clean_env(HOME=str(self.folder)),
        )

    def status(self) -> dict[str, Any] | None:
        """What Patroni's REST API says of this node (GET /patroni), or None."""
        answer = http_json(f"http://127.0.0.1:{self.rest_port}/patroni")
        return None if answer is None else answer[1]

    def is_primary(self) -> bool:
        """Whether Patroni says this node is the primary (GET /primary is 200,
        which is what HAProxy asks)."""
        answer = http_json(f"http://127.0.0.1:{self.rest_port}/primary")
        return answer is not None and answer[0] == 200

    def patroni_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile.read_text())
        return None

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (its postmaster.pid), or None."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
            return pid if alive(pid) else None
        return None

    def kill_postmaster(self) -> None:
        """kill -9 of PostgreSQL's postmaster; Patroni lives on."""
        pid = self.postmaster_pid()
        assert pid is not None, f"{self.name}: PostgreSQL is not running"
        kill_postmaster(pid)

    def kill_patroni(self) -> None:
        """kill -9 of Patroni; PostgreSQL lives on, as the primary or standby it
        was, and nobody renews this node's keys in etcd."""
        pid = self.patroni_pid()
        assert pid is not None, f"{self.name}: Patroni never started"
        assert alive(pid), f"{self.name}: Patroni is not running"
        os.kill(pid, signal.SIGKILL)
        wait_gone([pid], timeout=10)

    def cut_off(self) -> None:
        """A partition between this node and the rest: it no longer reaches
        etcd, the other node no longer replicates from it nor reaches its REST
        API. Clients still reach its PostgreSQL and REST ports."""
        for link in (self.etcd_link, self.replication_link, self.rest_link):
            link.partition()

    def log_tail(self, lines: int = 40) -> str:
        return f"[{self.name}] " + super().log_tail(lines)

    def destroy(self) -> None:
        """Patroni, PostgreSQL and whatever they started: killed (all are below
        the subreaper); the proxies closed."""
        self.stop()
        for link in (self.etcd_link, self.replication_link, self.rest_link):
            link.close()


class HAProxy(Daemon):
    """HAProxy sending connections to the node whose Patroni says it is primary."""

    def __init__(self, folder: Path, nodes: list[PatroniNode], timing: Timing) -> None:
        super().__init__("haproxy", folder)
        self.folder = folder
        self.port = free_port()
        self.nodes = nodes
        self.timing = timing

    def start(self) -> None:
        config = self.folder / "haproxy.cfg"
        configs = [node.config for node in self.nodes]
        config.write_text(haproxy_cfg(f"127.0.0.1:{self.port}", configs, self.timing))
        self.run(["haproxy", "-db", "-f", str(config)], self.folder, clean_env())

    def url_for(self, database: str) -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def routes_to_primary(self) -> bool:
        """Whether a connection through it reaches a server that takes writes."""
        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return False
        return row is not None and row[0] is False

    def routes_only_to_primary(self) -> bool:
        """Whether several connections in a row all reach the primary. HAProxy
        counts every server up when it starts, until checks have failed `fall`
        times; meanwhile it sends every other connection to the standby."""
        return all(self.routes_to_primary() for _ in range(2 * len(self.nodes)))


class PatroniCluster:
    """etcd, two Patroni nodes and HAProxy, in one folder."""

    def __init__(self, folder: Path, timing: Timing = TEST_TIMING) -> None:
        bindir = find_bindir()
        assert bindir is not None
        self.folder = folder
        self.timing = timing
        self.etcd = Etcd(folder / "etcd")
        self.nodes = [
            PatroniNode(name, folder / name, bindir, self.etcd, timing)
            for name in ("node1", "node2")
        ]
        self.haproxy = HAProxy(folder / "haproxy", self.nodes, timing)

    def start(self, timeout: float = 120) -> None:
        """Starts everything; node1 bootstraps and leads, node2 clones it and
        becomes its synchronous standby. Returns once HAProxy routes to node1."""
        for path in (self.etcd.folder, self.haproxy.folder):
            path.mkdir()
        self.etcd.start()
        first, second = self.nodes
        first.start()
        wait_until(first.is_primary, timeout, f"node1 to lead\n{self.logs()}")
        second.start()
        self.wait_until_healthy(timeout)
        self.haproxy.start()
        wait_until(self.haproxy.routes_only_to_primary, 30, f"HAProxy\n{self.logs()}")

    def leader(self) -> PatroniNode | None:
        """The node whose Patroni says it is the primary, if exactly one does."""
        leaders = [node for node in self.nodes if node.is_primary()]
        return leaders[0] if len(leaders) == 1 else None

    def healthy(self) -> tuple[PatroniNode, PatroniNode] | None:
        """The leader and its replica when the replica streams from it as its
        synchronous standby, in PostgreSQL's eyes and in Patroni's; else None."""
        leader = self.leader()
        if leader is None:
            return None
        (replica,) = [node for node in self.nodes if node is not leader]
        with contextlib.suppress(psycopg.Error):
            standbys = leader.postgres.replicas()
            status = replica.status() or {}
            if [(s.name, s.state, s.sync_state) for s in standbys] == [
                (replica.name, "streaming", "sync")
            ] and status.get("sync_standby"):
                return leader, replica
        return None

    def wait_until_healthy(
        self, timeout: float = 120
    ) -> tuple[PatroniNode, PatroniNode]:
        """Waits until there is a leader with a streaming synchronous standby."""
        found: list[tuple[PatroniNode, PatroniNode]] = []

        def check() -> bool:
            pair = self.healthy()
            if pair is not None:
                found.append(pair)
            return pair is not None

        wait_until(check, timeout, f"a leader and a sync standby\n{self.logs()}")
        return found[0]

    def wait_for_new_leader(self, old: PatroniNode, timeout: float = 60) -> PatroniNode:
        """Waits until another node than old is the leader; returns it."""
        wait_until(
            lambda: self.leader() not in (None, old),
            timeout,
            f"a leader other than {old.name}\n{self.logs()}",
        )
        leader = self.leader()
        assert leader is not None
        return leader

    def multi_host_url(self, database: str, *order: PatroniNode) -> str:
        """libpq's URL naming the nodes' PostgreSQL servers (in the order given,
        or node1, node2), for the first one that takes writes."""
        servers = [node.postgres.port for node in (order or self.nodes)]
        hosts = ",".join(f"127.0.0.1:{port}" for port in servers)
        return (
            f"postgresql://{OWNER}@{hosts}/{database}?target_session_attrs=read-write"
        )

    def logs(self) -> str:
        """The end of every daemon's log, for failure messages."""
        daemons: list[Daemon] = [self.etcd, *self.nodes, self.haproxy]
        return "\n".join(daemon.log_tail() for daemon in daemons)

    def destroy(self) -> None:
        """Everything stopped, whatever state it is in."""
        self.haproxy.stop()
        for node in self.nodes:
            node.destroy()
        self.etcd.stop()


@contextlib.contextmanager
def patroni_cluster(timing: Timing = TEST_TIMING) -> Iterator[PatroniCluster]:
    """A running Patroni cluster with a leader and a synchronous standby;
    stopped, and its folder removed, afterwards whatever happened."""
    folder = Path(tempfile.mkdtemp(prefix="pocket-patroni-"))
    shutil.chown(folder, OWNER, OWNER)  # for Patroni, below it
    folder.chmod(0o755)
    cluster: PatroniCluster | None = None
    try:
        cluster = PatroniCluster(folder, timing)
        cluster.start()
        yield cluster
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)
