"""`reconcile status`: who has access to what, and what will change next. Pure: rows from roster, keys, records
and now, classified by the same rules as the plan (ownership.classify)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from .live import LiveKey
from .ownership import classify
from .records import Records
from .render import markdown_cell
from .roster import Roster
from .timeutil import humanize, iso


@dataclass(frozen=True)
class StatusRow:
    developer: str
    state: str  # active, blocked, expired, retiring, second key, no key, not in roster, hand-made, unproven claim
    alias: str | None
    models: list[str]
    age: str | None
    expires_in: str | None
    rotation_due_in: str | None
    spend: float | None
    max_budget: float | None
    last_active: str | None
    token_prefix: str | None


def _row(roster: Roster, name: str, key: LiveKey | None, state: str, now: datetime) -> StatusRow:
    dev = roster.developer(name)
    due = None
    if key is not None and key.created_at is not None and key.retire_at is None:
        moments = []
        if roster.keys.rotate_after is not None:
            moments.append(key.created_at + roster.keys.rotate_after)
        if dev is not None and dev.rotate is not None and key.created_at < dev.rotate:
            moments.append(now)
        due = humanize(min(moments) - now) if moments else None
    return StatusRow(
        developer=name, state=state, alias=key.alias if key else roster.keys.alias_for(name),
        models=list(key.models) if key else [], age=humanize(now - key.created_at) if key and key.created_at else None,
        expires_in=humanize(key.expires - now) if key and key.expires else None, rotation_due_in=due,
        spend=key.spend if key else None, max_budget=key.limits.max_budget if key else None,
        last_active=iso(key.last_active) if key else None, token_prefix=key.token[:8] if key else None)


def status_rows(roster: Roster, live: list[LiveKey], records: Records, now: datetime) -> list[StatusRow]:
    seen = classify(roster, live, records, now)
    rows = []
    for name, key in seen.current.items():
        state = "not in roster" if roster.developer(name) is None else "blocked" if key.blocked else \
            "expired" if key.expired(now) else "active"
        rows.append(_row(roster, name, key, state, now))
    rows += [_row(roster, name, key, "retiring", now) for name, keys in seen.retiring.items() for key in keys]
    rows += [_row(roster, key.roster_name or "?", key, "second key", now) for key in seen.extra_current]
    rows += [_row(roster, name, key, "hand-made", now) for name, key in seen.handmade.items()]
    rows += [_row(roster, key.roster_name or "?", key, "unproven claim", now) for key, _ in seen.unproven]
    named = {r.developer for r in rows}
    rows += [_row(roster, d.name, None, "no key", now) for d in roster.developers if d.name not in named]
    return sorted(rows, key=lambda r: (r.developer, r.state != "active", r.alias or ""))


def _spend(row: StatusRow) -> str:
    if row.spend is None:
        return ""
    return f"{row.spend:g} / {row.max_budget if row.max_budget is not None else '-'}"


def render_status(rows: list[StatusRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"format_version": 1, "keys": [asdict(r) for r in rows]}, indent=2) + "\n"
    headers = ["developer", "state", "alias", "models", "age", "expires in", "rotation due", "spend / budget",
               "last active"]
    table = [[r.developer, r.state, r.alias or "", ", ".join(r.models), r.age or "", r.expires_in or "never",
              r.rotation_due_in or "", _spend(r),
              r.last_active or ""] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in table]) + "\n"
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines) + "\n"
