"""Views of a Plan: text for a terminal, markdown for a pull-request comment, JSON for machines."""

from __future__ import annotations

import json
import re
from typing import Any

from ..core.plan import Plan
from ..core.timeutil import iso
from .terminal import paint

MARKDOWN_FOLD_AFTER = 20  # longer plans go inside <details> so the comment stays readable


def header(plan: Plan) -> str:
    """What the plan really touches: managed keys, and how many of the others it takes over."""
    text_ = f"{plan.managed_count} managed key(s); {plan.unmanaged_count} other key(s) on the proxy"
    if plan.taken_over:
        text_ += f", of which this plan takes over {plan.taken_over} (high-risk, below)"
    else:
        text_ += " are never touched"
    if plan.revoked:
        text_ += f"; {plan.revoked} key(s) under the developers' LiteLLM users that the tool did not issue are revoked"
    text_ += f"; {plan.proofs.header()}"
    if plan.simulated:
        text_ += f"; SIMULATED CLOCK: as of {iso(plan.now)} (RECONCILE_NOW), not now"
    return text_


def text(plan: Plan, *, roster: str, proxy_url: str, brakes: str | None = None, colour: bool = False) -> str:
    out = [f"Plan for {roster} against {proxy_url}: {header(plan)}.", ""]
    for change in plan.changes:
        out.append(f"  {paint(f'{change.symbol:<3}', change.symbol, colour)} {change.name:<24} {change.kind}: "
                   f"{change.reason}")
        out.extend(f"        {line}" for line in change.details())
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
    if brakes:
        out.append(paint(f"Apply would stop here: {brakes} (apply --force if this is intended)", "!", colour))
    return "\n".join(out) + "\n"


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]()#!~|"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                     "@": "@\u200b", "\n": " ", "\r": " "})


_AUTOLINK = re.compile(r"(://|www\.)", re.I)


def markdown_cell(text_: str) -> str:
    """Text from the roster or the proxy, inert in a pull-request comment: no HTML, no links (GitHub links bare
    URLs and www. names too: a zero-width space breaks them) or emphasis, no math ($), no @mentions (a zero-width
    space follows each @), no way out of a table cell."""
    text_ = text_.translate(_MARKDOWN).replace("$", "\\$")
    return _AUTOLINK.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1:], text_)


COMMENT_LIMIT = 60_000  # characters: GitHub refuses a comment over 65,536, and the workflow adds a little


def markdown(plan: Plan, *, roster: str, proxy_url: str, others: bool = False, brakes: str | None = None,
             limit: int = COMMENT_LIMIT) -> str:
    """others: show the details of keys and users the tool does not manage (RECONCILE_COMMENT_DETAILS=1). brakes:
    why apply would stop, if it would. What a reviewer must see comes first and is never cut (the summary, the
    checksum, the brakes, the high-risk changes); only the per-change table is shortened to fit `limit`, and the
    whole plan stays in the JSON artifact."""
    out = [f"### litellm-roster plan for {markdown_cell(roster)}", "", f"**{plan.summary}**", ""]
    if not plan.empty:
        out += [f"Checksum: `{plan.checksum}`", ""]
    out += [f"On {markdown_cell(proxy_url)}: {header(plan)}.", ""]
    if brakes:
        out += [f"**Apply would stop here:** {markdown_cell(brakes)} (apply `--force` if this is intended)", ""]
    if plan.high_risk:
        out += ["**High-risk changes** (apply needs `--force`, whatever the team size)", "",
                *(f"- {markdown_cell(c.name)}: {markdown_cell(c.risk or '')}" for c in plan.high_risk), ""]
    if plan.warnings:
        shown = plan.warnings[:MARKDOWN_WARNINGS]
        more = len(plan.warnings) - len(shown)
        out += ["**Warnings**", "", *(f"- {markdown_cell(w)}" for w in shown),
                *([f"- …and {more} more (the job's log has them all)"] if more else []), ""]
    if plan.changes:
        out += _change_table(plan, others, limit - sum(len(line) + 1 for line in out))
    return "\n".join(out) + "\n"


MARKDOWN_WARNINGS = 50


def _change_table(plan: Plan, others: bool, room: int) -> list[str]:
    hidden = "a key or user the tool does not manage (details in the job's log)"
    rows = [f"| `{c.symbol}` | {markdown_cell(c.name)} | {c.kind} | {hidden} | |" if c.about_others and not others
            else f"| `{c.symbol}` | {markdown_cell(c.name)} | {c.kind} | {markdown_cell(c.reason)} | "
                 f"{'<br>'.join(markdown_cell(line) for line in c.details())} |" for c in plan.changes]
    table = ["| | developer | change | reason | details |", "|---|---|---|---|---|"]
    fold = len(plan.changes) > MARKDOWN_FOLD_AFTER
    room -= 200  # the table's head and the <details> around it
    kept = 0
    for row in rows:
        if room - len(row) - 1 < 0:
            break
        table.append(row)
        room -= len(row) + 1
        kept += 1
    if kept < len(rows):
        table.append(f"| | | | …{len(rows) - kept} more change(s): the whole plan is in the JSON artifact | |")
    if fold:
        return [f"<details><summary>{len(plan.changes)} changes</summary>", "", *table, "", "</details>", ""]
    return [*table, ""]


def as_json(plan: Plan, *, others: bool = False, brakes: str | None = None) -> str:
    """others: as for markdown. The JSON plan is a CI artifact, as public as the comment; without details a change
    about someone else's key or user keeps its kind and developer, and apply --plan still checks the checksum."""
    data = {**plan.data, "brakes": brakes}  # what apply would stop on: CI can fail at plan time
    if not others:
        data["changes"] = [{"kind": c.kind, c.subject: c.name, "details": "hidden: a key or user the tool does not "
                            "manage (RECONCILE_COMMENT_DETAILS=1 shows them)"} if c.about_others else c.data
                           for c in plan.changes]
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def render(plan: Plan, fmt: str, *, roster: str, proxy_url: str, others: bool = False,
           brakes: str | None = None, colour: bool = False) -> str:
    if fmt == "json":
        return as_json(plan, others=others, brakes=brakes)
    if fmt == "markdown":
        return markdown(plan, roster=roster, proxy_url=proxy_url, others=others, brakes=brakes)
    return text(plan, roster=roster, proxy_url=proxy_url, brakes=brakes, colour=colour)


def apply_report(result: Any, roster: Any, label: str, sha: str) -> str:
    """The results comment on the merged pull request: each change's outcome, and who has a key to fetch (with the
    command, never a secret). result: session.ApplyResult."""
    done = len(result.outcomes) - len(result.failed)
    out = [f"### litellm-roster apply for {markdown_cell(label)} at `{sha[:12]}`", "",
           f"**{done} done, {len(result.failed)} failed" + (f", {result.not_started} not started" if
                                                            result.not_started else "") + ".**", ""]
    if result.outcomes:
        out += ["| | developer | change | result |", "|---|---|---|---|"]
        out += [f"| `{o.change.symbol}` | {markdown_cell(o.change.name)} | {o.change.kind} | "
                f"{'ok' if o.ok else 'FAILED: ' + markdown_cell(o.message)} |" for o in result.outcomes[:200]]
        if len(result.outcomes) > 200:
            out.append(f"| | | | …and {len(result.outcomes) - 200} more: the job's log has them |")
        out.append("")
    ready = sorted({o.change.name for o in result.outcomes if o.ok and o.change.kind in ("create", "rotate")})
    if ready:
        env = f" --environment {roster.environment}" if roster.environment else ""
        out += ["**New keys to fetch** (after `git pull`; no key is ever posted):", ""]
        for name in ready:
            dev = roster.developer(name)
            who = f"@{dev.github}" if dev is not None and dev.github else markdown_cell(name)
            out.append(f"- {who}: `reconcile key {name}{env}`")
        out.append("")
    if result.conflicts:
        out += [f"Conflicts left for a decision: {markdown_cell(', '.join(result.conflicts))}", ""]
    return "\n".join(out) + "\n"
