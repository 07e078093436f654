"""Which live keys are this tool's, proven: the one classification that the diff and `reconcile status` share.

A key's metadata is writable by whoever may update the key, so `managed_by: litellm-roster` is only a claim. A key
is ours when it was created by the proxy admin (LiteLLM's server-side `created_by`, which a self-service user cannot
set) and its proof, made with the operator's RECONCILE_PROOF_KEY, verifies (proofs.py). Without proofs (off, or a
key from before they began) what can be checked without them decides: for a key adopted in place, an adoption
record in the repository must hold its hash and it must not be bound to a team that is not the tool's. A claim that
fails is reported and never changed (docs/design.md, "Ownership").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .live import LiveKey
from .proofs import FIELD, NO_PROOFS, Proofs, Prover, Standing
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


def key_standing(key: LiveKey, proofs: Proofs) -> tuple[Standing, str]:
    return proofs.check(key.metadata.get(FIELD), key.created_at, "key", key.roster_name or "", key.token)


def proof_problem(key: LiveKey, records: Records, our_teams: frozenset[str] | None = None,
                  proofs: Proofs = NO_PROOFS) -> str | None:
    """None when the key is proven ours; else why not, for the plan. our_teams: ids of the tool's teams, when read."""
    if not key.made_by_admin:
        return f"claims to be managed by litellm-roster but was created by {key.created_by!r}, not the proxy admin"
    standing, why = key_standing(key, proofs)
    if standing is Standing.PROVEN:
        return None
    if standing is Standing.FAILED:
        return f"claims to be {key.roster_name}'s key but {why}"
    if key.external and key.retire_at is None and not records.proves(key.roster_name or "", key.token):
        return (f"claims to be {key.roster_name}'s adopted key but no adoption record in the repository holds its "
                "hash; adopt it again with --adopt if it is")
    if key.external and our_teams is not None and key.team_id and key.team_id not in our_teams:
        # A team's admins may relabel its keys (alias, metadata): a team key is never believed to be adopted.
        return (f"claims to be {key.roster_name}'s adopted key but is bound to team {key.team_id}, which is not the "
                "tool's: its admins may have relabelled it")
    return None


def classify(roster: Roster, live: list[LiveKey], records: Records, now: datetime,
             our_teams: frozenset[str] | None = None, proofs: Proofs = NO_PROOFS) -> Classified:
    out = Classified()
    aliases = {roster.keys.alias_for(d.name): d.name for d in roster.developers}
    renames = roster.renames
    for key in sorted(live, key=lambda k: (k.created_at or now, k.token)):
        name = renames.get(key.roster_name or "", key.roster_name)  # a renamed developer's key is theirs
        if key.managed:
            problem = proof_problem(key, records, our_teams, proofs) if name else \
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


def proofs_for(prover: Prover, live: list[LiveKey], teams: list[Any]) -> Proofs:
    """Whether proofs have begun on this proxy, from every key and team that claims to be the tool's."""
    claims = [(k.metadata.get(FIELD), "key", (k.roster_name or "", k.token)) for k in live if k.managed]
    claims += [(t.metadata.get(FIELD), "team", (t.claims, t.team_id)) for t in teams if t.claims]
    return Proofs.read(prover, claims)
