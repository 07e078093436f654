"""Views of a Plan: text for a terminal, markdown for a pull-request comment, JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from .plan import Adopt, Change, Create, Delete, Plan, RemoveFile, Rotate, Update

MARKDOWN_FOLD_AFTER = 20  # longer plans go inside <details> so the comment stays readable


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)


def details(change: Change) -> list[str]:
    """One line per fact a reviewer needs, never a secret."""
    if isinstance(change, (Create, Rotate, Adopt)):
        want = change.desired
        lines = [f"alias {want.alias}", f"models {_value(want.models)}"]
        limits = {k: v for k, v in want.limits.as_dict().items() if v is not None}
        if limits:
            lines.append(", ".join(f"{k} {v}" for k, v in limits.items()))
        lines.append(f"expires {_value(change.data['after']['expires'])}" + ("; blocked" if want.blocked else ""))
        if isinstance(change, Rotate):
            old = f"old key {change.old.token[:8]}… ({change.old.alias})"
            lines.append(f"{old} kept until {change.data['retire_at']}" if change.retire_at else
                         f"{old} revoked at once (grace 0)")
        return lines
    if isinstance(change, Update):
        lines = [f"{name}: {_value(before)} -> {_value(after)}" for name, before, after in change.fields]
        if change.file_fields:
            lines.append("key file: refresh " + ", ".join(change.file_fields))
        return lines
    if isinstance(change, Delete):
        return [f"key {change.key.token[:8]}… ({change.key.alias})" + ("; its key file too" if change.remove_file
                                                                          else "")]
    if isinstance(change, RemoveFile):
        return [change.path]
    return [f"key {change.data.get('token_prefix', '')[:8]}… ({change.data.get('alias')})"]


def header(plan: Plan) -> str:
    """What the plan really touches: managed keys, and how many of the others it takes over."""
    text_ = f"{plan.managed_count} managed key(s); {plan.unmanaged_count} other key(s) on the proxy"
    if plan.taken_over:
        return text_ + f", of which this plan takes over {plan.taken_over} (high-risk, below)"
    return text_ + " are never touched"


def text(plan: Plan, *, roster: str, proxy_url: str) -> str:
    out = [f"Plan for {roster} against {proxy_url}: {header(plan)}.", ""]
    for change in plan.changes:
        out.append(f"  {change.symbol:<3} {change.name:<24} {change.kind}: {change.reason}")
        out.extend(f"        {line}" for line in details(change))
    if plan.changes:
        out.append("")
    if plan.high_risk:
        out.append("High-risk changes (apply needs --force, whatever the team size):")
        out.extend(f"  ! {c.name}: {c.risk}" for c in plan.high_risk)
        out.append("")
    if plan.warnings:
        out.append("Warnings:")
        out.extend(f"  ! {w}" for w in plan.warnings)
        out.append("")
    out.append(plan.summary)
    if not plan.empty:
        out.append(f"Checksum: {plan.checksum}")
    return "\n".join(out) + "\n"


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]()#!~|"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                     "@": "@\u200b", "\n": " ", "\r": " "})


def markdown_cell(text_: str) -> str:
    """Text from the roster or the proxy, inert in a pull-request comment: no HTML, no links or emphasis, no
    @mentions (a zero-width space follows each @), no way out of a table cell."""
    return text_.translate(_MARKDOWN)


def markdown(plan: Plan, *, roster: str, proxy_url: str) -> str:
    out = [f"### litellm-roster plan for {markdown_cell(roster)}", "", f"**{plan.summary}**", ""]
    if plan.changes:
        table = ["| | developer | change | reason | details |", "|---|---|---|---|---|"]
        table += [f"| `{c.symbol}` | {markdown_cell(c.name)} | {c.kind} | {markdown_cell(c.reason)} | "
                  f"{'<br>'.join(markdown_cell(line) for line in details(c))} |" for c in plan.changes]
        if len(plan.changes) > MARKDOWN_FOLD_AFTER:
            out += [f"<details><summary>{len(plan.changes)} changes</summary>", "", *table, "", "</details>"]
        else:
            out += table
        out.append("")
    if plan.high_risk:
        out += ["**High-risk changes** (apply needs `--force`, whatever the team size)", "",
                *(f"- {markdown_cell(c.name)}: {markdown_cell(c.risk or '')}" for c in plan.high_risk), ""]
    if plan.warnings:
        out += ["**Warnings**", "", *(f"- {markdown_cell(w)}" for w in plan.warnings), ""]
    out.append(f"On {markdown_cell(proxy_url)}: {header(plan)}.")
    if not plan.empty:
        out.append(f"Checksum: `{plan.checksum}`")
    return "\n".join(out) + "\n"


def as_json(plan: Plan) -> str:
    return json.dumps(plan.data, indent=2, sort_keys=True, default=str) + "\n"


def render(plan: Plan, fmt: str, *, roster: str, proxy_url: str) -> str:
    if fmt == "json":
        return as_json(plan)
    if fmt == "markdown":
        return markdown(plan, roster=roster, proxy_url=proxy_url)
    return text(plan, roster=roster, proxy_url=proxy_url)
