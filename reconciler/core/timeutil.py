"""Durations and instants as the roster writes them, and as LiteLLM stores them."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def parse_duration(text: str) -> timedelta:
    """'90d' -> 90 days; '0' -> zero. The roster schema has already checked the shape."""
    if text == "0":
        return timedelta(0)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def format_duration(delta: timedelta) -> str:
    """A short human form: 90d, 3h, 45s; largest unit that divides evenly."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


def humanize(delta: timedelta) -> str:
    """Rounded for reports: 89d, 5h, 12m, 30s."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


def parse_instant(value: str, *, end_of_day: bool) -> datetime:
    """A roster date or time, as an aware UTC datetime.

    A bare date means the end of that day in UTC for expiry ('stops working at the end of that day') and the start
    of that day for a rotation instant ('rotate anything issued before that day').
    """
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        at = time(23, 59, 59) if end_of_day else time(0, 0, 0)
        return datetime.combine(day, at, tzinfo=timezone.utc)
    text = text.replace("Z", "+00:00").replace(" ", "T", 1)
    # Python 3.10's fromisoformat reads only 3 or 6 digits of a fraction (3.11 reads any): pad or cut to 6.
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_litellm_time(value: str | None) -> datetime | None:
    """LiteLLM's timestamps: ISO-8601, with 'Z' or an offset, sometimes naive (then UTC)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    """UTC, second precision, 'Z': the one format the tool writes."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
