"""The views of `reconcile status`: a text table that fits 120 columns, markdown with spend charts, JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..core.status import StatusRow, TeamRow
from .render import markdown_cell


def _table(headers: list[str], table: list[list[str]], fmt: str) -> list[str]:
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return lines + ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in table]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    return lines + ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]


def _money(spend: float | None, budget: float | None) -> str:
    return "" if spend is None else f"{spend:g} / {budget if budget is not None else '-'}"


WIDE_ONLY = ("alias", "models", "last active")  # in --wide, markdown and JSON; the text table fits 120 columns


def render_status(rows: list[StatusRow], fmt: str, teams: list[TeamRow] | None = None, *, wide: bool = False) -> str:
    teams = teams or []
    if fmt == "json":
        return json.dumps({"format_version": 1, "keys": [asdict(r) for r in rows],
                           "teams": [asdict(t) for t in teams]}, indent=2) + "\n"
    headers = ["developer", "state", "alias", "models", "age", "expires in", "rotation due", "spend / budget",
               "last active"] + (["team"] if teams else [])
    table = [[r.developer, r.state, r.alias or "", ", ".join(r.models), r.age or "", r.expires_in or "never",
              r.rotation_due_in or "", _money(r.spend, r.max_budget), r.last_active or ""]
             + ([r.team or ""] if teams else []) for r in rows]
    if fmt == "text" and not wide:
        keep = [i for i, h in enumerate(headers) if h not in WIDE_ONLY]
        headers, table = [headers[i] for i in keep], [[row[i] for i in keep] for row in table]
    lines = _table(headers, table, fmt)
    if teams:  # each team's spend against its budget, beside each member's inside it
        lines += ["", *_table(
            ["team", "state", "spend / budget", "budget period", "members (spend / budget in team)"],
            [[t.team, t.state, _money(t.spend, t.max_budget), t.budget_duration or "",
              ", ".join(f"{m['developer']} {_money(m['spend'], m['budget'])}" for m in t.members)] for t in teams],
            fmt)]
    if fmt == "markdown":  # GitHub renders Mermaid: the job summary shows spend beside the tables
        lines += _chart("Developers: spend and budget (USD)", [(r.developer, r.spend, r.max_budget) for r in rows
                                                               if r.spend is not None and r.state != "retiring"])
        lines += _chart("Teams: spend and budget (USD)", [(t.team, t.spend, t.max_budget) for t in teams
                                                          if t.spend is not None])
    return "\n".join(lines) + "\n"


CHART_BARS = 40  # the most a chart shows: the biggest spenders


def _chart(title: str, points: list[tuple[str, float | None, float | None]]) -> list[str]:
    """A Mermaid xychart-beta: spend as bars, budget as a line (0 where there is none)."""
    points = sorted(points, key=lambda p: -(p[1] or 0))[:CHART_BARS]
    if not points:
        return []
    labels = ", ".join(f'"{name}"' for name, _, _ in points)  # roster names: lowercase letters, digits, hyphens
    return ["", "```mermaid", "xychart-beta", f'  title "{title}"', f"  x-axis [{labels}]", '  y-axis "USD"',
            f"  bar [{', '.join(f'{spend or 0:g}' for _, spend, _ in points)}]",
            f"  line [{', '.join(f'{budget or 0:g}' for _, _, budget in points)}]", "```"]
