"""Timestamps as the SQL backends store them: local naive ISO-8601 text.

Text in the fixed form ``YYYY-MM-DDTHH:MM:SS`` (dates ``YYYY-MM-DD``) compares and sorts correctly
on every database, needs no driver-specific type conversion, and keeps date arithmetic in Python,
where it is the same for sqlite and PostgreSQL. Times are local and naive, as SIP2's are.
"""

from __future__ import annotations

import datetime

DUE_TIME = datetime.time(23, 59)


def local_naive(moment: datetime.datetime) -> datetime.datetime:
    """Drop sub-second precision, and convert an aware time to local naive time.

    An aware time at the very edge of the calendar (a terminal's ``99991231Z   235959``) may have
    no local time east or west of UTC; it becomes the calendar's first or last second rather than
    an ``OverflowError`` on a server whose zone is not UTC.
    """
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone().replace(tzinfo=None)
        except OverflowError:
            moment = datetime.datetime.max if moment.year == datetime.MAXYEAR else datetime.datetime.min
    return moment.replace(microsecond=0)


def stamp(moment: datetime.datetime) -> str:
    return local_naive(moment).isoformat()


def parse_stamp(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def day(value: datetime.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_day(text: str | None) -> datetime.date | None:
    return datetime.date.fromisoformat(text) if text else None


def end_of_day(date: datetime.date) -> datetime.datetime:
    """Loans fall due and hold-shelf waits end at 23:59 local time on their last day."""
    return datetime.datetime.combine(date, DUE_TIME)


def days_from(now: datetime.datetime, days: int) -> datetime.datetime:
    return end_of_day(now.date() + datetime.timedelta(days=days))
