"""The reads a command's batch makes on PostgreSQL, each one statement for many
wallets: their current states (pocket.application.Pocket._get_many), and the
events written since they were cached (Pocket._refresh)."""

from __future__ import annotations

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier


def latest_states_statement(
    datastore: PostgresDatastore, events_table: str, snapshots_table: str
) -> Composed:
    """One statement for many aggregates' current states: each one's latest
    snapshot (kind 0) and its events from the snapshot's own on (kind 1), in
    order. The event the snapshot was taken at is read for its identity (the
    aggregate's head, see pocket.groupcommit), not applied again."""
    # LATERAL subqueries, so that each aggregate's latest snapshot and its
    # events after it are found by index ranges, however long its history.
    return SQL(
        "WITH snap AS (SELECT i.id AS originator_id, s.originator_version, "
        "s.topic, s.state FROM unnest(%(ids)s::{id_type}[]) AS i(id) "
        "LEFT JOIN LATERAL (SELECT originator_version, topic, state "
        "FROM {snapshots} WHERE originator_id = i.id "
        "ORDER BY originator_version DESC LIMIT 1) AS s ON true) "
        "SELECT 0 AS kind, originator_id, originator_version, topic, state "
        "FROM snap WHERE originator_version IS NOT NULL "
        "UNION ALL "
        "SELECT 1, e.originator_id, e.originator_version, e.topic, e.state "
        "FROM snap CROSS JOIN LATERAL (SELECT originator_id, originator_version, "
        "topic, state FROM {events} WHERE originator_id = snap.originator_id "
        "AND originator_version >= coalesce(snap.originator_version, 0)) AS e "
        "ORDER BY originator_id, kind, originator_version"
    ).format(
        id_type=Identifier(datastore.originator_id_type),
        snapshots=Identifier(datastore.schema, snapshots_table),
        events=Identifier(datastore.schema, events_table),
    )


def newer_events_statement(datastore: PostgresDatastore, events_table: str) -> Composed:
    """One statement for many aggregates' events from the versions given on: the
    event at the version given is read for its identity (is it the one the
    caller holds?), the ones after it to be applied."""
    return SQL(
        "SELECT e.originator_id, e.originator_version, e.topic, e.state "
        "FROM unnest(%(ids)s::{id_type}[], %(versions)s::bigint[]) AS k(id, version) "
        "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
        "FROM {events} WHERE originator_id = k.id "
        "AND originator_version >= k.version) AS e "
        "ORDER BY e.originator_id, e.originator_version"
    ).format(
        id_type=Identifier(datastore.originator_id_type),
        events=Identifier(datastore.schema, events_table),
    )
