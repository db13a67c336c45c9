"""The operator's reads on SQL: `SqlAdminScans` (what the `plexspaces` command browses), and
reading a database's schema version without opening a store on it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    delete,
    false,
    func,
    inspect,
    literal,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import URL, Engine, create_engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from ..records import NodeLeases, ReminderKey, StoredReminder, _check_key, from_micros
from .engine import (
    _KEY_COLUMNS,
    REMINDERS_TABLE,
    SCHEMA_COMPONENT,
    SCHEMA_TABLE,
    SqlStoreBase,
    _a,
    _after,
    _is_memory_sqlite,
    _is_truthy,
    _key_literals,
    _KeyText,
    _Page,
    _Position,
    _r,
    _reconnecting,
    _schema_version,
    _serializer,
    _unavailable,
)
from .leases import _keys_in

__all__ = ["SqlAdminScans"]

_DELETE_CHUNK = 300  # keys per statement: 900 parameters, far below every limit


class SqlAdminScans(SqlStoreBase):
    """The `AdminScans` part of `SqlReminderStore`, and `read_schema_version`."""

    @_reconnecting
    def scan(
        self,
        limit: int,
        *,
        after: tuple[datetime, ReminderKey] | None = None,
        actor_type: str | None = None,
        actor_key: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
    ) -> list[StoredReminder]:
        self._check_count(limit, "limit", 1)
        start = self._check_position(after)
        filters: list[ColumnElement[bool]] = []
        if actor_type is not None:
            filters.append(_r.actor_type == self._check_text(actor_type, "actor_type"))
        if actor_key is not None:
            filters.append(_r.actor_key == self._check_text(actor_key, "actor_key"))
        if due_after is not None:
            filters.append(_r.due_us > self._check_time(due_after, "due_after"))
        if due_before is not None:
            filters.append(_r.due_us < self._check_time(due_before, "due_before"))

        def fetch(cursor: _Position | None, want: int) -> _Page:
            # Unfinished and finished rows are two ranges of the due index (finished, due_us,
            # key); merging the two ordered halves keeps every page an index range scan.
            halves = []
            for finished in (false(), true()):
                half = select(REMINDERS_TABLE, _r.due_us.label("pos")).where(
                    _r.finished == finished, *filters
                )
                if cursor is not None:
                    half = half.where(_after(_r.due_us, cursor))
                halves.append(half.order_by(_r.due_us, *_KEY_COLUMNS).limit(want).subquery())
            both = union_all(select(halves[0]), select(halves[1])).subquery()
            statement = (
                select(both)
                .order_by(both.c.pos, both.c.actor_type, both.c.actor_key, both.c.name)
                .limit(want)
            )
            rows = self._rows(statement)
            return rows, len(rows) < want

        return self._scan(fetch, limit, start)

    # -- whole-type views --------------------------------------------------------------------------

    def _view_filters(
        self, actor_type: str | None, name_prefix: str | None
    ) -> list[ColumnElement[bool]]:
        filters: list[ColumnElement[bool]] = []
        if actor_type is not None:
            filters.append(_r.actor_type == self._check_text(actor_type, "actor_type"))
        if name_prefix is not None:
            prefix = self._check_text(name_prefix, "name_prefix")
            # substr counts characters on SQLite and PostgreSQL alike, and needs no escaping
            # of the LIKE wildcards a name may contain.
            filters.append(func.substr(_r.name, 1, len(prefix)) == literal(prefix, _KeyText))
        return filters

    @_reconnecting
    def find(
        self,
        limit: int,
        *,
        actor_type: str | None = None,
        name_prefix: str | None = None,
        after: ReminderKey | None = None,
    ) -> list[StoredReminder]:
        self._check_count(limit, "limit", 1)
        filters = self._view_filters(actor_type, name_prefix)
        cursor = None if after is None else _check_key(after)
        found: list[StoredReminder] = []
        while len(found) < limit:
            want = limit - len(found)
            statement = select(REMINDERS_TABLE).where(*filters)
            if cursor is not None:
                statement = statement.where(
                    tuple_(*_KEY_COLUMNS)
                    > tuple_(*_key_literals((cursor.actor_type, cursor.actor_key, cursor.name)))
                )
            rows = self._rows(statement.order_by(*_KEY_COLUMNS).limit(want))
            found.extend(self._decode_all(rows))
            if len(rows) < want:
                break
            last = rows[-1]
            cursor = ReminderKey(last.actor_type, last.actor_key, last.name)
        return found

    @_reconnecting
    def count_matching(
        self, *, actor_type: str | None = None, name_prefix: str | None = None
    ) -> int:
        filters = self._view_filters(actor_type, name_prefix)
        with self._connection() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(REMINDERS_TABLE).where(*filters)
                ).scalar_one()
            )

    @_reconnecting
    def delete_many(self, keys: Collection[ReminderKey]) -> int:
        if isinstance(keys, ReminderKey | str | bytes) or not isinstance(keys, Collection):
            raise ValueError(f"keys {keys!r} must be a collection of ReminderKey")
        checked = sorted({_check_key(key) for key in keys})
        deleted = 0
        with self._write() as connection:
            for begin in range(0, len(checked), _DELETE_CHUNK):
                chunk = checked[begin : begin + _DELETE_CHUNK]
                deleted += connection.execute(
                    delete(REMINDERS_TABLE).where(_keys_in(chunk))
                ).rowcount
        return deleted

    @_reconnecting
    def lease_holders(self, now: datetime) -> list[NodeLeases]:
        now_us = self._check_time(now, "now")

        def tally(node: ColumnElement[str], until: ColumnElement[int]) -> Select[Any]:
            live = func.coalesce(func.sum(case((until >= now_us, 1), else_=0)), 0)
            return (
                select(
                    node.label("node_id"),
                    func.count().label("held"),
                    live.label("live"),
                    func.max(until).label("latest"),
                )
                .where(node.is_not(None), until.is_not(None))
                .group_by(node)
            )

        with self._connection() as connection:
            claims = connection.execute(tally(_r.claimed_by, _r.claimed_until_us)).all()
            activations = connection.execute(tally(_a.node_id, _a.lease_until_us)).all()
        # Per node: live claims, expired claims, live activations, expired activations, latest end.
        tallies: dict[str, list[int]] = {}
        for offset, rows in ((0, claims), (2, activations)):
            for row in rows:
                counts = tallies.setdefault(str(row.node_id), [0, 0, 0, 0, int(row.latest)])
                counts[offset] = int(row.live)
                counts[offset + 1] = int(row.held) - int(row.live)
                counts[4] = max(counts[4], int(row.latest))
        return [
            NodeLeases(
                node_id=node,
                live_claims=counts[0],
                expired_claims=counts[1],
                live_activations=counts[2],
                expired_activations=counts[3],
                lease_until=from_micros(counts[4]),
            )
            for node, counts in sorted(tallies.items())
        ]

    @staticmethod
    def read_schema_version(url_or_engine: str | URL | Engine) -> int | None:
        """The reminder schema version a database records, read without opening a store on it.

        Nothing is created, changed or refused, so this also answers for a database written by
        another version of plexspaces (which `SqlReminderStore` refuses to open), and a read-only
        tool can tell an empty database from a plexspaces one before it opens a store (which
        would create the tables).

        Returns:
            The version, or None when the database holds no plexspaces tables: nothing was ever
            stored in it, or the SQLite file does not exist (it is not created; a `?uri=true`
            URL is opened as given).

        Raises:
            StoreUnavailableError: the database cannot be reached.
            SchemaVersionError: the recorded version is not an integer.
        """
        if isinstance(url_or_engine, Engine):
            engine, owned = url_or_engine, False
        else:
            url = make_url(url_or_engine)
            if url.get_backend_name() == "sqlite":
                if _is_memory_sqlite(url):
                    return None  # a new in-memory database is empty
                if not _is_truthy(url.query.get("uri")) and not Path(url.database or "").is_file():
                    return None
            # A plain engine, not create_store_engine's: reading must not switch a file to WAL.
            engine, owned = create_engine(url), True
        s = SCHEMA_TABLE.c
        try:
            with _serializer(engine), engine.connect() as connection:
                if not inspect(connection).has_table(SCHEMA_TABLE.name):
                    return None
                found = connection.execute(
                    select(s.version).where(s.component == SCHEMA_COMPONENT)
                ).scalar_one_or_none()
        except (OperationalError, InterfaceError) as error:
            raise _unavailable(engine, error) from error
        finally:
            if owned:
                engine.dispose()
        return _schema_version(found, engine)
