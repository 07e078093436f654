"""Views of a Plan: text for a terminal, markdown for a pull-request comment, JSON for machines."""

from __future__ import annotations

import json
import re
from typing import Any

from .live import user_id_for
from .plan import Adopt, Change, Conflict, Create, Delete, MoveFile, Plan, RemoveFile, Restore, Rotate, Update
from .teams import CreateTeam, DeleteTeam, Join, Leave, MemberBudget, TeamConflict, UpdateTeam
from .timeutil import format_duration, iso
from .users import ROLE, CreateUser, DeleteUser, Revoke, UpdateUser, UserConflict, key_line

MARKDOWN_FOLD_AFTER = 20  # longer plans go inside <details> so the comment stays readable


def value_text(value: Any, field: str = "") -> str:
    """One vocabulary for values, in plans and in status: true/false, never (no expiry), none (no value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if value is None:
        return "never" if field == "expires" else "none"
    return str(value)


def details(change: Change) -> list[str]:
    """One line per fact a reviewer needs, never a secret."""
    if isinstance(change, (Create, Rotate, Restore)):
        want = change.desired
        lines = [f"alias {want.alias}", f"models {value_text(want.models)}"]
        if isinstance(change, Restore):
            lines.insert(0, f"key {change.token[:8]}… as its key file holds it")
        limits = {k: v for k, v in want.limits.as_dict().items() if v is not None}
        if limits:
            lines.append(", ".join(f"{k} {v}" for k, v in limits.items()))
        lines.append(f"expires {value_text(iso(want.expires), 'expires')}" + ("; blocked" if want.blocked else ""))
        if want.team:
            lines.append(f"team {want.team}")
        if isinstance(change, Rotate):
            old = f"old key {change.old.token[:8]}… ({change.old.alias})"
            if change.retire_at:
                lines.append(f"{old} kept until {iso(change.retire_at)} ({format_duration(change.grace)})")
            else:
                why = "rotate: is a revocation" if change.revocation else "grace 0"
                lines.append(f"{old} revoked at once ({why})")
        return lines
    if isinstance(change, (Update, Adopt)):
        lines = [f"{name}: {value_text(before, name)} -> {value_text(after, name)}"
                 for name, before, after in change.fields]
        if isinstance(change, Adopt) or change.key.retire_at is not None:
            return [f"key {change.key.token[:8]}… ({change.key.alias})", *lines]
        if change.file_fields:
            lines.append("key file: refresh " + ", ".join(change.file_fields))
        return lines
    if isinstance(change, Delete):
        return [f"key {change.key.token[:8]}… ({change.key.alias})" + ("; its key file too" if change.remove_file
                                                                          else "")]
    if isinstance(change, RemoveFile):
        return [change.path]
    if isinstance(change, MoveFile):
        return [f"{change.source} -> {change.target}"]
    if isinstance(change, CreateTeam):
        settings = ", ".join(f"{k} {value_text(v, k)}" for k, v in change.settings if v is not None)
        return [f"models {value_text(change.models) if change.models else 'all the proxy serves'}",
                *([settings] if settings else [])]
    if isinstance(change, UpdateTeam):  # and AdoptTeam
        return [f"{name}: {value_text(before, name)} -> {value_text(after, name)}"
                for name, before, after in change.fields]
    if isinstance(change, (Join, Leave)):
        budget = getattr(change, "budget", None)
        return [f"team {change.team}" + (f", member budget {value_text(budget, 'max_budget')}" if budget else "")]
    if isinstance(change, MemberBudget):
        return [f"team {change.team}: {value_text(change.before, 'max_budget')} -> "
                f"{value_text(change.after, 'max_budget')}"]
    if isinstance(change, DeleteTeam):
        return [f"team {change.team_id}"]
    if isinstance(change, CreateUser):
        return [f"user {user_id_for(change.name)}: role {ROLE}, models {value_text(change.models)}, no budget"]
    if isinstance(change, UpdateUser):
        return [f"user {user_id_for(change.name)}",
                *(f"{name}: {value_text(before, name)} -> {value_text(after, name)}"
                  for name, before, after in change.fields)]
    if isinstance(change, DeleteUser):
        return [f"user {user_id_for(change.name)}"]
    if isinstance(change, Revoke):
        return [f"key {change.key.token[:8]}… ({change.key.alias}) made by {change.key.created_by}, models "
                f"{value_text(change.key.models)}"]
    if isinstance(change, UserConflict):
        return [f"user {change.user.user_id}: {change.user.describe()}",
                *(f"its key {key_line(k)}" for k in change.keys)]
    if isinstance(change, TeamConflict):
        return [f"team {change.team.team_id} ({change.team.alias}); admins {value_text(change.team.admins)}"]
    return [f"key {change.data.get('token_prefix', '')[:8]}… ({change.data.get('alias')})"]


def header(plan: Plan) -> str:
    """What the plan really touches: managed keys, and how many of the others it takes over."""
    text_ = f"{plan.managed_count} managed key(s); {plan.unmanaged_count} other key(s) on the proxy"
    if plan.taken_over:
        text_ += f", of which this plan takes over {plan.taken_over} (high-risk, below)"
    else:
        text_ += " are never touched"
    if plan.revoked:
        text_ += f"; {plan.revoked} key(s) under the developers' LiteLLM users that the tool did not issue are revoked"
    return f"{text_}; {plan.proofs.header()}"


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


_AUTOLINK = re.compile(r"(://|www\.)", re.I)


def markdown_cell(text_: str) -> str:
    """Text from the roster or the proxy, inert in a pull-request comment: no HTML, no links (GitHub links bare
    URLs and www. names too: a zero-width space breaks them) or emphasis, no math ($), no @mentions (a zero-width
    space follows each @), no way out of a table cell."""
    text_ = text_.translate(_MARKDOWN).replace("$", "\\$")
    return _AUTOLINK.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1:], text_)


def _others(change: Change) -> bool:
    """About a key or user the tool does not manage: a comment may be public (a fork's pull request), so it shows
    that there is one, not whose it is or what it may do, unless the operator asks for details."""
    return isinstance(change, (Revoke, UserConflict)) or (isinstance(change, Conflict) and change.key is not None)


def markdown(plan: Plan, *, roster: str, proxy_url: str, others: bool = False) -> str:
    """others: show the details of keys and users the tool does not manage (RECONCILE_COMMENT_DETAILS=1)."""
    out = [f"### litellm-roster plan for {markdown_cell(roster)}", "", f"**{plan.summary}**", ""]
    if plan.changes:
        hidden = "a key or user the tool does not manage (details in the job's log)"
        table = ["| | developer | change | reason | details |", "|---|---|---|---|---|"]
        table += [f"| `{c.symbol}` | {markdown_cell(c.name)} | {c.kind} | {hidden} | |" if _others(c) and not others
                  else f"| `{c.symbol}` | {markdown_cell(c.name)} | {c.kind} | {markdown_cell(c.reason)} | "
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


def as_json(plan: Plan, *, others: bool = False) -> str:
    """others: as for markdown. The JSON plan is a CI artifact, as public as the comment; without details a change
    about someone else's key or user keeps its kind and developer, and apply --plan still checks the checksum."""
    data = plan.data
    if not others:
        data["changes"] = [{"kind": c.kind, c.subject: c.name, "details": "hidden: a key or user the tool does not "
                            "manage (RECONCILE_COMMENT_DETAILS=1 shows them)"} if _others(c) else c.data
                           for c in plan.changes]
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def render(plan: Plan, fmt: str, *, roster: str, proxy_url: str, others: bool = False) -> str:
    if fmt == "json":
        return as_json(plan, others=others)
    if fmt == "markdown":
        return markdown(plan, roster=roster, proxy_url=proxy_url, others=others)
    return text(plan, roster=roster, proxy_url=proxy_url)
