"""The Patroni cluster the failover tests run on (tests/patroni.py): what it is
when it starts, what its faults leave behind, that nothing of it outlives the
test, and that docs/failover.md ships its configuration."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.conftest import require_patroni
from tests.docs import page, section
from tests.patroni import patroni_cluster, wait_until
from tests.patroni_config import deployment_haproxy_cfg, deployment_patroni_yaml
from tests.proctree import alive, descendants


def test_the_failover_page_ships_the_configuration_the_tests_use() -> None:
    patroni = section(page("failover.md"), "With Patroni and HAProxy")
    assert f"```yaml\n{deployment_patroni_yaml()}```\n" in patroni
    assert f"```\n{deployment_haproxy_cfg()}```\n" in patroni


def test_a_cluster_is_what_it_says_its_faults_too_and_nothing_outlives_it() -> None:
    require_patroni()
    with patroni_cluster() as patroni:
        # node1 leads, node2 is its synchronous standby, HAProxy goes to node1.
        leader, replica = patroni.wait_until_healthy()
        assert (leader.name, replica.name) == ("node1", "node2")
        assert leader.postgres.query("SHOW synchronous_standby_names") == [("node2",)]
        assert leader.postgres.query("SHOW synchronous_commit") == [("on",)]
        assert replica.postgres.is_in_recovery()
        with psycopg.connect(patroni.haproxy.url_for("postgres")) as conn:
            row = conn.execute("SELECT current_setting('port')::int").fetchone()
        assert row == (leader.postgres.port,)
        postmaster = leader.postmaster_pid()
        assert postmaster is not None
        # Patroni killed: its PostgreSQL goes on as the primary it was.
        leader.kill_patroni()
        assert leader.postmaster_pid() == postmaster
        assert not leader.postgres.is_in_recovery()
        # The postmaster killed: it is reaped, not left a zombie whose pid
        # Patroni would take for a running server.
        leader.kill_postmaster()
        wait_until(lambda: not Path(f"/proc/{postmaster}").exists(), 10, "reaped")
        daemons = [patroni.etcd, *patroni.nodes, patroni.haproxy]
        pids = [d.process.pid for d in daemons if d.process is not None]
        pids += [child for pid in pids for child in descendants(pid)]
        folder = patroni.folder
    assert len(pids) > 3 + 6  # the daemons, a PostgreSQL and its processes
    assert not [pid for pid in pids if alive(pid)]
    assert not folder.exists()
