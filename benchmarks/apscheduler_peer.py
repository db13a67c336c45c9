# APScheduler 3 ships no type information, and it is absent without the bench extra:
# mypy: disable-error-code="import-untyped, import-not-found"
"""The peer of the reminder scenarios: APScheduler 3.x, a BackgroundScheduler with a
SQLAlchemyJobStore on a SQLite file set up as PlexSpaces sets up its own (WAL journal,
synchronous=NORMAL, 30 s busy timeout).

Imported only when APScheduler is installed (the `bench` extra); `benchmarks.reminders` reports
the peer as not installed otherwise. Jobs keep APScheduler's defaults (thread pool of 10, one
instance per job) except `misfire_grace_time=None`, so that a late job runs instead of being
dropped: every fire is delivered, as PlexSpaces delivers every reminder fire.
"""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, create_engine, event

from benchmarks.measure import LatenessLog

LOGS: dict[str, LatenessLog] = {}
"""Where `fire` records, by the id passed in each job's arguments."""


def fire(log_id: str, scheduled_at: float, job_id: str | None = None) -> None:
    """What every peer job runs: record its lateness (a job id recorded twice is a duplicate)."""
    LOGS[log_id].record(scheduled_at, job_id)


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return engine


class Scheduler(BackgroundScheduler):  # type: ignore[misc]
    """A BackgroundScheduler on a SQLite job store that also says when its loop has finished its
    first pass over the store (an observation for the restart scenario, nothing else)."""

    def __init__(self, path: Path) -> None:
        self.engine = _sqlite_engine(path)
        self.store = SQLAlchemyJobStore(engine=self.engine)
        super().__init__(
            jobstores={"default": self.store},
            job_defaults={"misfire_grace_time": None},
            timezone=UTC,
        )
        self.first_pass = threading.Event()

    def _process_jobs(self) -> float | None:
        wait: float | None = super()._process_jobs()
        self.first_pass.set()
        return wait

    def add(self, job_id: str, when: float, log_id: str) -> None:
        """A one-shot job due at `when` (POSIX seconds) that records into `LOGS[log_id]`."""
        self.add_job(
            fire,
            "date",
            run_date=datetime.fromtimestamp(when, UTC),
            args=[log_id, when, job_id],
            id=job_id,
        )

    def store_many(self, jobs: list[tuple[str, float]], log_id: str) -> None:
        """Store jobs `(job_id, when)` as `add` would, in one transaction: the rows `add` writes
        (the state of an added job, pickled, with its id, trigger and arguments replaced). For
        loading many jobs quickly, outside any timing (add_job writes one transaction per job);
        the scheduler must be started paused, and `resume()` then serves them."""
        template = self.add_job(
            fire, "date", run_date=datetime.now(UTC), args=[log_id, 0.0, "template"]
        )
        state = template.__getstate__()
        template.remove()
        rows = []
        for job_id, when in jobs:
            at = datetime.fromtimestamp(when, UTC)
            job_state = state | {
                "id": job_id,
                "trigger": DateTrigger(run_date=at, timezone=UTC),
                "args": (log_id, when, job_id),
                "next_run_time": at,
            }
            rows.append(
                {
                    "id": job_id,
                    "next_run_time": when,
                    "job_state": pickle.dumps(job_state, self.store.pickle_protocol),
                }
            )
        with self.engine.begin() as connection:
            connection.execute(self.store.jobs_t.insert(), rows)

    def close(self) -> None:
        """Stop without waiting for jobs still queued, and close the database."""
        self.shutdown(wait=False)
        self.engine.dispose()
