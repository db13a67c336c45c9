"""Calendar schedules: a five-field cron expression evaluated in an IANA time zone.

The cron language and its evaluation are cronsim's (it follows Debian's cron, Vixie cron with
Debian's changes); the zone data is `zoneinfo`'s, with the `tzdata` package as the source where
the operating system has none. So:

- For a schedule at fixed times (its minute and hour fields both name values, not `*` or
  `*/n`), a time that does not exist locally (a spring-forward gap) is not lost: it fires once,
  at the first local time after the gap ("30 2 * * *" fires at 03:00 on the day Europe/Prague
  goes from 02:00 to 03:00); and a time that exists twice (a fall-back overlap) fires once, at
  its first occurrence.
- A schedule whose minute or hour field is `*` or `*/n` ("*/30 * * * *") runs by the clock on
  the wall: it fires at both 02:00 and both 02:30 of the repeated hour.
- A day that a month lacks is skipped, as in every cron: "0 0 31 * *" fires only in months with
  a 31st. "L" says the last day of the month ("0 0 L * *"), "LW" its last weekday, "5L" its
  last Friday, "MON#2" its second Monday.

Times go in and come out as aware datetimes; everything the runtime stores is UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["CRON_ACCEPTED", "CalendarSchedule", "calendar_schedule"]

CRON_ACCEPTED: Final = (
    "five fields 'minute hour day-of-month month day-of-week' such as '0 9 * * MON-FRI' "
    "(numbers, ranges, lists, steps, JAN-DEC, SUN-SAT, and 'L', 'LW', '5L', 'MON#2' for last "
    "days and nth weekdays)"
)
_FIELDS: Final = 5
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CalendarSchedule:
    """A cron expression in a time zone: the ticks of a calendar reminder.

    Attributes:
        cron: the expression, as given.
        tz: the IANA name of the zone it is read in ("Europe/Prague", "UTC").
        zone: that zone.
    """

    cron: str
    tz: str
    zone: ZoneInfo

    def next_after(self, when: datetime) -> datetime | None:
        """The first tick strictly after `when` (aware UTC), or None if there is none within the
        50 years cronsim looks ahead (a schedule such as "0 0 29 2 MON" may have none)."""
        try:
            tick = next(CronSim(self.cron, when.astimezone(self.zone)))
        except (StopIteration, OverflowError, ValueError):
            return None
        return tick.astimezone(UTC)

    def latest_at_or_before(self, when: datetime, *, not_before: datetime) -> datetime:
        """The last tick at or before `when`, and not before `not_before` (a tick known to be at
        or before `when`, which is returned when nothing later is)."""
        try:
            found = next(CronSim(self.cron, (when + _ONE_MICROSECOND).astimezone(self.zone), True))
            candidate = max(found.astimezone(UTC), not_before)
        except (StopIteration, OverflowError, ValueError):
            candidate = not_before
        # Counting backwards is not the exact mirror of counting forwards around a clock change:
        # walk forward to the tick that forward counting makes, the one the reminder keeps to.
        while (following := self.next_after(candidate)) is not None and following <= when:
            candidate = following
        return candidate

    def local(self, when: datetime) -> datetime:
        """`when` in the schedule's zone."""
        return when.astimezone(self.zone)


def calendar_schedule(cron: object, tz: object = "UTC") -> CalendarSchedule:
    """The schedule of `cron` read in the zone `tz`, checked.

    Args:
        cron: five cron fields, see `CRON_ACCEPTED`.
        tz: an IANA zone name ("Europe/Prague", "America/New_York", "UTC") or a `ZoneInfo`.

    Raises:
        ValueError: `cron` is not a cron expression of five fields, never fires, or `tz` is not
            a zone the zone database knows; the message names the value and what is accepted.
    """
    if isinstance(tz, ZoneInfo):
        tz = tz.key
    if not isinstance(cron, str):
        raise ValueError(f"cron {cron!r} is not a string; expected {CRON_ACCEPTED}")
    if not isinstance(tz, str):
        raise ValueError(
            f"tz {tz!r} is not a time zone name; expected an IANA name such as 'Europe/Prague', "
            "'America/New_York' or 'UTC', or a zoneinfo.ZoneInfo"
        )
    return _schedule(cron, tz)


@lru_cache(maxsize=1024)
def _schedule(cron: str, tz: str) -> CalendarSchedule:
    # Cached: a stored row is checked each time it is read, and the expressions are few.
    zone = _zone(tz)
    fields = cron.split()
    if len(fields) != _FIELDS:
        raise ValueError(
            f"cron {cron!r} has {len(fields)} fields; expected {CRON_ACCEPTED}. Seconds and "
            "names such as '@daily' are not accepted ('@daily' is '0 0 * * *')"
        )
    start = datetime(2000, 1, 1, tzinfo=zone)
    try:
        iterator = CronSim(cron, start)
    except (CronSimError, ValueError) as error:
        raise ValueError(
            f"cron {cron!r} is not valid ({error}); expected {CRON_ACCEPTED}"
        ) from None
    try:
        next(iterator)
    except StopIteration:
        raise ValueError(
            f"cron {cron!r} never fires (no matching day in 50 years); expected {CRON_ACCEPTED}"
        ) from None
    return CalendarSchedule(cron, tz, zone)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"tz {tz!r} is not a time zone the zone database knows; expected an IANA name such "
            "as 'Europe/Prague', 'America/New_York' or 'UTC'"
        ) from None
