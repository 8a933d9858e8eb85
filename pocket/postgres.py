"""Pocket's PostgreSQL factory: the library's, building Pocket's recorders over
a pool whose connections Pocket configures and bounds."""

from __future__ import annotations

from eventsourcing.postgres import (
    PostgresFactory,
)
from eventsourcing.utils import Environment, EnvType

from pocket.config import (
    COMMIT_TIMEOUT_KEY,
    commit_timeout,
)
from pocket.deadlines import (
    Watchdog,
)
from pocket.postgres_events import PocketEventsRecorder, SnapshotsRecorder
from pocket.postgres_pool import bound_connections, libpq_options

# The advisory lock between committing commands (shared, in the insert function)
# and replacing a token (exclusive: pocket.database.Transaction.lock_tokens).


class PocketPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, building Pocket's recorders."""

    aggregate_recorder_class = SnapshotsRecorder
    application_recorder_class = PocketEventsRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        """The library's datastore, its pool's connections given Pocket's libpq
        options too: with target_session_attrs=read-write each new connection
        goes to whichever server of a multi-host URL is the primary now.
        Pocket's own connections (locks, LISTEN, probes) copy the pool's
        settings (connect_kwargs), so they follow it as well."""
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        kwargs.update(libpq_options(self.env))
        # Shared by the recorder and Pocket's own tables (pocket.database).
        self.commit_timeout = commit_timeout(self.env.get(COMMIT_TIMEOUT_KEY))
        self.watchdog = Watchdog()
        bound_connections(self.datastore, self.watchdog)

    def aggregate_recorder(self, purpose: str = "events") -> SnapshotsRecorder:
        """The snapshots recorder, told who bounds commands: its reads are not
        tried again once a command's deadline has passed (see once_more)."""
        recorder = super().aggregate_recorder(purpose)
        assert isinstance(recorder, SnapshotsRecorder)
        recorder.watchdog = self.watchdog
        return recorder

    def application_recorder(self) -> PocketEventsRecorder:
        """The events recorder, told whether it may create its insert function,
        how long a write may wait for its commit, and who interrupts it then."""
        recorder = super().application_recorder()
        assert isinstance(recorder, PocketEventsRecorder)
        recorder.may_create_function = self.env_create_table()
        recorder.commit_timeout = self.commit_timeout
        recorder.watchdog = self.watchdog
        return recorder
