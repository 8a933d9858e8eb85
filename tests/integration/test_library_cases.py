"""Pocket's recorders and factories pass the eventsourcing library's own test cases
(`eventsourcing.tests.persistence`), wired as the library's own PostgreSQL and
SQLite tests wire them: a datastore per test, tables made by create_recorder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment, get_topic
from psycopg.conninfo import conninfo_to_dict

from pocket import walletrecords_postgres, walletrecords_sqlite
from pocket.postgres_events import PocketEventsRecorder, SnapshotsRecorder
from tests.conftest import ADMIN_URL, require_postgres
from tools.scratch import scratch_postgres

pytestmark = pytest.mark.postgres


class OnPostgres:
    """A scratch database and a datastore on it, for each test."""

    url: str
    datastore: PostgresDatastore

    @pytest.fixture(autouse=True)
    def scratch_database(self) -> Iterator[None]:
        require_postgres()
        with scratch_postgres(ADMIN_URL, "pocket_library") as url:
            self.url = url
            info = conninfo_to_dict(url)
            self.datastore = PostgresDatastore(
                str(info["dbname"]),
                str(info.get("host", "127.0.0.1")),
                str(info.get("port", "5432")),
                str(info.get("user", "postgres")),
                "",
            )
            yield
            self.datastore.close()


class OnSQLite:
    """A new SQLite file and a datastore on it, for each test."""

    path: Path
    datastore: SQLiteDatastore

    @pytest.fixture(autouse=True)
    def scratch_file(self, tmp_path: Path) -> Iterator[None]:
        self.path = tmp_path / "library.db"
        self.datastore = SQLiteDatastore(str(self.path))
        yield
        self.datastore.close()


# PostgreSQL: the events recorders Pocket uses, and the projector's recorder.


class TestPostgresAggregateRecorder(OnPostgres, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = SnapshotsRecorder(self.datastore, events_table_name="stored_events")
        recorder.create_table()
        return recorder


class TestPostgresApplicationRecorder(OnPostgres, ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = PocketEventsRecorder(
            self.datastore, events_table_name="stored_events"
        )
        recorder.create_table()
        return recorder


class TestPostgresWalletRecordsRecorder(OnPostgres, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = walletrecords_postgres.WalletRecordsPostgresRecorder(
            self.datastore,
            events_table_name="upstream_events",
            tracking_table_name="upstream_tracking",
        )
        recorder.create_table()
        return recorder


class TestPostgresWalletRecordsTracking(OnPostgres, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = walletrecords_postgres.WalletRecordsPostgresRecorder(
            self.datastore,
            events_table_name="upstream_events",
            tracking_table_name="upstream_tracking",
        )
        recorder.create_table()
        return recorder


class PostgresTrackingRecorderSubclass(PostgresTrackingRecorder):
    pass


class TestPostgresFactory(OnPostgres, InfrastructureFactoryTestCase[Any]):
    def setUp(self) -> None:
        info = conninfo_to_dict(self.url)
        self.env = Environment("TestCase")
        factory = walletrecords_postgres.WalletRecordsPostgresFactory
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = get_topic(factory)
        self.env[factory.POSTGRES_DBNAME] = str(info["dbname"])
        self.env[factory.POSTGRES_HOST] = str(info.get("host", "127.0.0.1"))
        self.env[factory.POSTGRES_PORT] = str(info.get("port", "5432"))
        self.env[factory.POSTGRES_USER] = str(info.get("user", "postgres"))
        self.env[factory.POSTGRES_PASSWORD] = ""
        super().setUp()

    def expected_factory_class(self) -> type[InfrastructureFactory[Any]]:
        return walletrecords_postgres.WalletRecordsPostgresFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return SnapshotsRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return PocketEventsRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return PostgresTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return PostgresTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return walletrecords_postgres.WalletRecordsPostgresRecorder


# SQLite: the library's events recorders, and the projector's recorder.


class TestSQLiteWalletRecordsRecorder(OnSQLite, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = walletrecords_sqlite.WalletRecordsSQLiteRecorder(
            self.datastore,
            events_table_name="upstream_events",
            tracking_table_name="upstream_tracking",
        )
        recorder.create_table()
        return recorder


class TestSQLiteWalletRecordsTracking(OnSQLite, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = walletrecords_sqlite.WalletRecordsSQLiteRecorder(
            self.datastore,
            events_table_name="upstream_events",
            tracking_table_name="upstream_tracking",
        )
        recorder.create_table()
        return recorder


class SQLiteTrackingRecorderSubclass(SQLiteTrackingRecorder):
    pass


class TestSQLiteFactory(OnSQLite, InfrastructureFactoryTestCase[Any]):
    def setUp(self) -> None:
        self.env = Environment("TestCase")
        factory = walletrecords_sqlite.WalletRecordsSQLiteFactory
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = get_topic(factory)
        self.env[factory.SQLITE_DBNAME] = str(self.path)
        super().setUp()

    def expected_factory_class(self) -> type[InfrastructureFactory[Any]]:
        return walletrecords_sqlite.WalletRecordsSQLiteFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return SQLiteAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return SQLiteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return SQLiteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return SQLiteTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return walletrecords_sqlite.WalletRecordsSQLiteRecorder
