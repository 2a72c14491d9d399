"""Application recorders of the event store, extended with what the ledger needs of them.

Each back-end's recorder learns to tell the log position (notification id) of a stored event,
so a retried command can answer with the position of the event it first recorded.
The SQLite recorder also learns to follow the log by polling: `eventsourcing` 9.5.6 gives
SQLite no subscription of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription, Subscription
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier


@runtime_checkable
class LocatesEvents(Protocol):
    """A recorder that can tell where in the log a stored event sits."""

    def notification_id_of(self, originator_id: UUID, version: int) -> int | None: ...


class LedgerPOPORecorder(POPOApplicationRecorder):
    """The in-memory recorder, able to locate events."""

    def notification_id_of(self, originator_id: UUID, version: int) -> int | None:
        with self._database_lock:
            index = self._stored_events_index.get(str(originator_id), {})
            position = index.get(version)
            return None if position is None else position + 1


class LedgerPOPOFactory(POPOFactory):
    """The in-memory back-end, with the locating recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        return LedgerPOPORecorder()


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """The SQLite recorder, able to locate events and to be followed by polling."""

    poll_interval = 0.05

    def notification_id_of(self, originator_id: UUID, version: int) -> int | None:
        statement = (
            f"SELECT rowid FROM {self.events_table_name} "  # noqa: S608 (table name is ours)
            "WHERE originator_id=? AND originator_version=?"
        )
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, (originator_id.hex, version))
            row = c.fetchone()
            return None if row is None else int(row[0])

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return _PollingSubscription(self, gt=gt, topics=topics, interval=self.poll_interval)


class _PollingSubscription(ListenNotifySubscription[ApplicationRecorder]):
    """Wakes the base subscription at a fixed interval instead of on NOTIFY."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        gt: int | None,
        topics: Sequence[str],
        interval: float,
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._interval = interval
        self._ticker = threading.Thread(target=self._tick, name="pdl-poll", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._has_been_stopped:
            self._has_been_notified.set()
            self._stopped_or_slept(self._interval)

    def _stopped_or_slept(self, seconds: float) -> None:
        threading.Event().wait(seconds)


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """The PostgreSQL recorder, able to locate events."""

    def notification_id_of(self, originator_id: UUID, version: int) -> int | None:
        statement = SQL(
            "SELECT notification_id FROM {schema}.{table} "
            "WHERE originator_id=%s AND originator_version=%s"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (originator_id, version))
            row = curs.fetchone()
            return None if row is None else int(row["notification_id"])
