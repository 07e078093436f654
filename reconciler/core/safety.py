"""Brakes: refuse plans that delete, rotate or update too much at once, or take anything over, unless forced.
Pure."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BrakeError
from .kinds.keys import Delete, Rotate, Update
from .plan import Plan
from .roster import Roster

# Key fields whose change is the one-time move of keys made by earlier versions (to their roster: user, to LLM routes
# only), or proofs given on first use: not a change of anyone's access, so not counted (docs/security.md).
MIGRATION_FIELDS = frozenset({"user_id", "allowed_routes", "proof"})


@dataclass(frozen=True)
class Brakes:
    """Thresholds in the style of octoDNS's: a share of the managed keys (for teams large enough that a share means
    something), a count, and, for every team of two or more, never all of its keys at once without --force."""

    MIN_MANAGED_FOR_SHARE = 10  # below this, a share means little (1 of 3 is 33 %)
    DEFAULT_SHARE = 0.30

    max_share: float = DEFAULT_SHARE
    max_count: int | None = None
    # Narrow overrides, each allowing one thing where --force allows everything; only the operator's flags set them.
    allow_deletes: int | None = None  # up to this many deletes pass the delete brakes
    allow_takeovers: frozenset[str] = frozenset()  # these developers' (or teams') takeovers of hand-made keys pass
    allow_scheduled_rotations: bool = False  # rotations due only to keys.rotate_after pass the rotation brakes
    allow_releases: frozenset[str] = frozenset()  # these developers' keys may be released (the roster's released:)

    @classmethod
    def for_roster(cls, roster: Roster, *, max_share: float | None = None, max_count: int | None = None,
                   allow_deletes: int | None = None, allow_takeovers: frozenset[str] = frozenset(),
                   allow_scheduled_rotations: bool = False, allow_releases: frozenset[str] = frozenset()) -> Brakes:
        """The operator's thresholds (flags, else RECONCILE_MAX_SHARE and RECONCILE_MAX_COUNT, else the defaults),
        tightened by the roster's keys.brakes, never loosened: the roster is what a pull request edits, and the
        brakes must hold against the pull request that would switch them off (docs/security.md)."""
        share = min(x for x in (max_share if max_share is not None else cls.DEFAULT_SHARE, roster.keys.max_share)
                    if x is not None)
        counts = [x for x in (max_count, roster.keys.max_count) if x is not None]
        return cls(share, min(counts) if counts else None, allow_deletes=allow_deletes, allow_takeovers=allow_takeovers,
                   allow_scheduled_rotations=allow_scheduled_rotations, allow_releases=allow_releases)

    def check(self, plan: Plan, *, force: bool = False) -> None:
        """Raise BrakeError naming the numbers when the plan would be stopped (problems), unless forced."""
        problems = [] if force else self.problems(plan)
        if problems:
            raise BrakeError("; ".join(problems) + "; nothing was changed. Re-run with --force if this is intended.")

    def problems(self, plan: Plan) -> list[str]:
        """Why apply would stop this plan: over a threshold, or a high-risk change (a takeover, a renamed alias
        template, a wildcard grant, a removed file), whatever the team size. Creates are never braked; deletes of
        rotated-out keys whose grace ended are routine and not counted; nor is the one-time migration of keys made
        by earlier versions (MIGRATION_FIELDS), nor the developers' LiteLLM users. The plan shows these too."""
        current = plan.current_count
        problems = [f"LiteLLM would refuse {refusal}" for refusal in plan.refusals]
        risky = [c for c in plan.high_risk if not (c.takes_over and c.name in self.allow_takeovers)
                 and not (c.kind == "release" and c.name in self.allow_releases)]
        if risky:
            listed = "; ".join(f"{c.name}: {c.risk}" for c in risky[:5]) + ("; ..." if len(risky) > 5 else "")
            takeovers = sorted({c.name for c in risky if c.takes_over})
            releases = sorted({c.name for c in risky if c.kind == "release"})
            narrower = (f"; --allow-takeover {' '.join(takeovers)} passes the takeovers alone" if takeovers else "") \
                + (f"; --allow-release {' '.join(releases)} passes the releases alone" if releases else "")
            problems.append(f"{len(risky)} high-risk change(s) need --force ({listed}){narrower}")
        counts = {
            "deletes": sum(1 for c in plan.changes if isinstance(c, Delete) and c.key.retire_at is None),
            "rotations": sum(1 for c in plan.changes if isinstance(c, Rotate)
                             and not (c.scheduled and self.allow_scheduled_rotations)),
            "updates": sum(1 for c in plan.changes if isinstance(c, Update) and c.key.retire_at is None
                           and {name for name, _, _ in c.fields} - MIGRATION_FIELDS),
        }
        scheduled = all(c.scheduled for c in plan.changes if isinstance(c, Rotate))
        narrower = {"deletes": f"--allow-deletes {counts['deletes']} passes exactly these",
                    "rotations": "--allow-scheduled-rotations passes them, each due to keys.rotate_after"
                    if scheduled else ""}
        for what, n in counts.items():
            if n == 0 or (what == "deletes" and self.allow_deletes is not None and n <= self.allow_deletes):
                continue
            if current >= 2 and n >= current:
                found = f"Too many {what}: {n} of {current} managed keys (all of them)"
            elif self.max_count is not None and n > self.max_count:
                found = f"Too many {what}: {n} is over the limit of {self.max_count}"
            elif current > self.MIN_MANAGED_FOR_SHARE and n / current > self.max_share:
                found = f"Too many {what}: {n} of {current} managed keys ({n / current:.0%}) is over " \
                        f"{self.max_share:.0%}"
            else:
                continue
            problems.append(found + (f" ({narrower[what]})" if narrower.get(what) else ""))
        return problems

