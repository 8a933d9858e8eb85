"""The Patroni and HAProxy configuration of Pocket's failover tests, which
docs/failover.md ships: one template each, filled in by the tests with their
temporary folders, free ports and short timings, and for docs/failover.md with a
deployment's hosts and Patroni's own timings (tests/test_patroni.py checks that
the page shows exactly that).

Settings chosen, and why:
- synchronous_mode on: a commit, hence an acknowledged request, returns only
  once the synchronous standby has its WAL, and Patroni promotes only a node
  that was synchronous, so a failover loses nothing acknowledged.
- synchronous_mode_strict off: with two nodes, strict would stop every write
  whenever either node is down (a promoted primary would wait for a standby
  that is not there). Off, Patroni drops the requirement when the standby is
  lost, after recording in etcd that no node may be promoted, so a failover
  still loses nothing; what is lost is protection against a second failure
  while the primary runs alone.
- primary_start_timeout 0: a crashed primary is failed over to the
  synchronous standby at once, not restarted in place (Patroni's default waits
  up to 300 s for it): with synchronous mode that loses nothing.
- use_pg_rewind, wal_log_hints: the old primary rejoins as a standby after a
  failover even when it had WAL the new one never got.
- HAProxy asks each node's Patroni `OPTIONS /primary`, which answers 200 on
  the primary only, with the status alone: to a GET it also sends a body that
  HAProxy does not read, and logs a traceback for each check that closed on it.
- etcd3 use_proxies: Patroni talks to the etcd addresses listed and does not
  look up the members' own; the tests put a proxy per node there to cut a node
  off, and a deployment lists every member.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SCOPE = "pocket"


@dataclass(frozen=True)
class Timing:
    """How fast Patroni and HAProxy act."""

    ttl: int  # seconds the leader key lives without being renewed
    loop_wait: int  # seconds between two rounds of Patroni's loop
    retry_timeout: int  # seconds Patroni retries etcd and PostgreSQL before giving up
    check_interval: str  # HAProxy: time between two health checks of a node
    fall: int  # HAProxy: failed checks before a node is taken out
    rise: int  # HAProxy: passed checks before it is put back


# Patroni's defaults, and the health checks of Patroni's own HAProxy example.
PRODUCTION_TIMING = Timing(
    ttl=30, loop_wait=10, retry_timeout=10, check_interval="3s", fall=3, rise=2
)
# Failovers in seconds. Patroni's rule holds: loop_wait + 2 * retry_timeout <= ttl,
# so a leader that lost etcd demotes itself before its key expires.
TEST_TIMING = Timing(
    ttl=8, loop_wait=1, retry_timeout=3, check_interval="500ms", fall=2, rise=1
)


@dataclass(frozen=True)
class Site:
    """What all nodes of one deployment share."""

    bin_dir: str  # where PostgreSQL's binaries are
    etcd_hosts: str  # host:port of each etcd member (or of this node's proxy)
    network: str  # where clients and the other node connect from
    auth: str  # pg_hba's method for them
    superuser_password: str
    replication_password: str
    watchdog: str  # Patroni's watchdog mode


@dataclass(frozen=True)
class Node:
    """One node's own addresses and folders."""

    name: str
    postgres_listen: str  # host:port PostgreSQL listens on
    postgres_connect: str  # host:port the other node replicates from
    rest_listen: str  # host:port of Patroni's REST API
    rest_connect: str  # host:port the other node reaches the REST API on
    data_dir: str
    pgpass: str  # a file Patroni writes for its own connections
    sockets: str  # PostgreSQL's Unix socket directory


PATRONI_TEMPLATE = """\
scope: {scope}
name: {name}

restapi:
  listen: {rest_listen}
  connect_address: {rest_connect}

etcd3:
  hosts: {etcd_hosts}
  use_proxies: true

bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    primary_start_timeout: 0
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: 'on'
        wal_log_hints: 'on'
        hot_standby: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
  - encoding: UTF8
  - locale: C.UTF-8
  - data-checksums

postgresql:
  listen: {postgres_listen}
  connect_address: {postgres_connect}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
      password: {superuser_password}
    replication:
      username: replicator
      password: {replication_password}
  parameters:
    unix_socket_directories: {sockets}
  pg_hba:
  - local all all peer
  - host all all {network} {auth}
  - host replication replicator {network} {auth}

watchdog:
  mode: {watchdog}

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""

HAPROXY_TEMPLATE = """\
global
    maxconn 1000

defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 5s

listen pocket_primary
    bind {bind}
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server {default_server}
{servers}
"""
HAPROXY_SERVER = "    server {name} {postgres} maxconn 100 check port {rest_port}"


def patroni_yaml(site: Site, node: Node, timing: Timing) -> str:
    """One node's patroni.yml."""
    return PATRONI_TEMPLATE.format(
        scope=SCOPE, **asdict(site), **asdict(node), **asdict(timing)
    )


def haproxy_cfg(bind: str, nodes: list[Node], timing: Timing) -> str:
    """haproxy.cfg: connections on bind go to the node whose Patroni says it is
    the primary (GET /primary answers 200 there only), and are cut when it no
    longer says so."""
    servers = [
        HAPROXY_SERVER.format(
            name=node.name,
            postgres=node.postgres_listen,
            rest_port=node.rest_listen.rsplit(":", 1)[1],
        )
        for node in nodes
    ]
    default_server = (
        f"inter {timing.check_interval} fall {timing.fall} rise {timing.rise} "
        "on-marked-down shutdown-sessions"
    )
    return HAPROXY_TEMPLATE.format(
        bind=bind, default_server=default_server, servers="\n".join(servers)
    )


# The deployment docs/failover.md shows: two database hosts, three etcd members.
EXAMPLE_SITE = Site(
    bin_dir="/usr/lib/postgresql/15/bin",
    etcd_hosts="10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379",
    network="10.0.0.0/24",
    auth="scram-sha-256",
    superuser_password="change-me",
    replication_password="change-me-too",
    watchdog="required",
)


def example_node(number: int) -> Node:
    """db1 or db2 of the deployment docs/failover.md shows."""
    host = f"10.0.0.{number}"
    return Node(
        name=f"db{number}",
        postgres_listen=f"{host}:5432",
        postgres_connect=f"{host}:5432",
        rest_listen=f"{host}:8008",
        rest_connect=f"{host}:8008",
        data_dir="/var/lib/postgresql/15/pocket",
        pgpass="/var/lib/postgresql/.pgpass.patroni",
        sockets="/var/run/postgresql",
    )


def deployment_patroni_yaml() -> str:
    """db1's patroni.yml, as docs/failover.md shows it."""
    return patroni_yaml(EXAMPLE_SITE, example_node(1), PRODUCTION_TIMING)


def deployment_haproxy_cfg() -> str:
    """haproxy.cfg on an application host, as docs/failover.md shows it."""
    nodes = [example_node(1), example_node(2)]
    return haproxy_cfg("127.0.0.1:5000", nodes, PRODUCTION_TIMING)
