"""Brakes: refuse plans that delete or rotate too much at once, unless forced. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BrakeError
from .plan import Delete, Plan, Rotate


@dataclass(frozen=True)
class Brakes:
    MIN_MANAGED_FOR_SHARE = 10  # below this, a share means little (1 of 3 is 33 %)

    max_share: float = 0.30
    max_count: int | None = None

    def check(self, plan: Plan, *, force: bool = False) -> None:
        """Raise BrakeError naming the numbers when the plan is over a threshold, or holds a high-risk change
        (a takeover, a renamed alias template, a wildcard grant, a removed file), whatever the team size. Creates
        are never braked; deletes of rotated-out keys whose grace ended are routine and not counted."""
        if force:
            return
        managed = plan.managed_count
        problems = []
        risky = plan.high_risk
        if risky:
            listed = "; ".join(f"{c.name}: {c.risk}" for c in risky[:5]) + ("; ..." if len(risky) > 5 else "")
            problems.append(f"{len(risky)} high-risk change(s) need --force ({listed})")
        counts = {
            "deletes": sum(1 for c in plan.changes if isinstance(c, Delete) and c.key.retire_at is None),
            "rotations": sum(1 for c in plan.changes if isinstance(c, Rotate)),
        }
        for what, n in counts.items():
            if n == 0:
                continue
            if self.max_count is not None and n > self.max_count:
                problems.append(f"Too many {what}: {n} is over the limit of {self.max_count}")
            elif managed > self.MIN_MANAGED_FOR_SHARE and n / managed > self.max_share:
                problems.append(f"Too many {what}: {n} of {managed} managed keys ({n / managed:.0%}) is over "
                                f"{self.max_share:.0%}")
        if problems:
            raise BrakeError("; ".join(problems) + "; nothing was changed. Re-run with --force if this is intended.")
