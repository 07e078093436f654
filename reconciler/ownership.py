"""Which live keys are this tool's, proven: the one classification that the diff and `reconcile status` share.

A key's metadata is writable by whoever may update the key, so `managed_by: litellm-roster` is only a claim. A key
is ours when (1) it was created by the proxy admin (LiteLLM's server-side `created_by`, which a self-service user
cannot set) and (2), for a key adopted in place, an adoption record in the repository holds its hash. A delivered
key needs no more: if its key file does not hold its hash it is rotated, so a claim on one can only cost its holder
the key. A claim that fails the proof is reported and never changed (docs/design.md, "Ownership").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .live import LiveKey
from .records import Records
from .roster import Roster


@dataclass
class Classified:
    current: dict[str, LiveKey] = field(default_factory=dict)  # developer -> the key that should carry the alias
    retiring: dict[str, list[LiveKey]] = field(default_factory=dict)  # rotated-out keys in their grace period
    extra_current: list[LiveKey] = field(default_factory=list)  # a second current key for one developer
    handmade: dict[str, LiveKey] = field(default_factory=dict)  # roster developer -> key made by hand on its alias
    unproven: list[tuple[LiveKey, str]] = field(default_factory=list)  # claims ours, fails the proof: why
    blocked: set[str] = field(default_factory=set)  # developers whose alias an unproven key holds
    unmanaged: int = 0

    @property
    def managed_count(self) -> int:
        return len(self.current) + sum(len(v) for v in self.retiring.values()) + len(self.extra_current)


def proof_problem(key: LiveKey, records: Records, our_teams: frozenset[str] | None = None) -> str | None:
    """None when the key is proven ours; else why not, for the plan. our_teams: ids of the tool's teams, when read."""
    if not key.made_by_admin:
        return f"claims to be managed by litellm-roster but was created by {key.created_by!r}, not the proxy admin"
    if key.external and key.retire_at is None and not records.proves(key.roster_name or "", key.token):
        return (f"claims to be {key.roster_name}'s adopted key but no adoption record in the repository holds its "
                "hash; adopt it again with --adopt if it is")
    if key.external and our_teams is not None and key.team_id and key.team_id not in our_teams:
        # A team's admins may relabel its keys (alias, metadata): a team key is never believed to be adopted.
        return (f"claims to be {key.roster_name}'s adopted key but is bound to team {key.team_id}, which is not the "
                "tool's: its admins may have relabelled it")
    return None


def classify(roster: Roster, live: list[LiveKey], records: Records, now: datetime,
             our_teams: frozenset[str] | None = None) -> Classified:
    out = Classified()
    aliases = {roster.keys.alias_for(d.name): d.name for d in roster.developers}
    for key in sorted(live, key=lambda k: (k.created_at or now, k.token)):
        name = key.roster_name
        if key.managed:
            problem = proof_problem(key, records, our_teams) if name else \
                "claims to be managed by litellm-roster but names no developer"
            if problem is not None:
                out.unproven.append((key, problem))
                if key.alias in aliases:
                    out.blocked.add(aliases[key.alias])
            elif key.retire_at is not None:
                out.retiring.setdefault(name, []).append(key)
            elif name in out.current:
                # Two current keys for one developer (a hand edit?): keep the one with the canonical alias.
                if key.alias == roster.keys.alias_for(name):
                    out.extra_current.append(out.current[name])
                    out.current[name] = key
                else:
                    out.extra_current.append(key)
            else:
                out.current[name] = key
        elif key.alias in aliases:
            out.handmade[aliases[key.alias]] = key
        else:
            out.unmanaged += 1
    return out
