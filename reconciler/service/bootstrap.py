"""`reconcile import`: a starting roster from the keys already on a proxy, so a team that made keys by hand can
adopt the tool in one pull request. Pure: YAML text from keys."""

from __future__ import annotations

import re
from datetime import datetime

import yaml

from ..core.kinds.teams import LiveTeam
from ..core.live import LiveKey
from ..core.records import NAME, NAME_PATTERN
from ..core.roster import LIMIT_FIELDS, RETIRING_SUFFIX
from ..core.timeutil import iso

PLACEHOLDER = "REPLACE-with-the-developers-age-or-ssh-public-key"
SCHEMA_FILE = "roster.schema.json"  # written beside an imported roster (reconcile schema prints it)


def alias_pattern(template: str) -> re.Pattern[str]:
    before, _, after = template.partition("{name}")
    return re.compile(re.escape(before) + f"(?P<name>{NAME_PATTERN})" + re.escape(after) + "$")


def _expires(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if (moment.hour, moment.minute, moment.second) == (23, 59, 59):
        return moment.date().isoformat()
    return iso(moment)


def import_roster(live: list[LiveKey], template: str, proxy_url: str,
                  teams: list[LiveTeam] | None = None) -> tuple[str, int]:
    pattern = alias_pattern(template)
    by_id = {t.team_id: t for t in teams or [] if t.alias and NAME.fullmatch(t.alias)}
    used: dict[str, LiveTeam] = {}
    developers = []
    for key in sorted(live, key=lambda k: k.alias or ""):
        m = pattern.match(key.alias or "")
        if not m or RETIRING_SUFFIX in (key.alias or ""):
            continue
        dev: dict = {"name": m.group("name"), "recipient": PLACEHOLDER, "models": sorted(key.models)}
        dev.update({name: getattr(key.limits, name) for name in LIMIT_FIELDS if getattr(key.limits, name) is not None})
        if (expires := _expires(key.expires)) is not None:
            dev["expires"] = expires
        if key.blocked:
            dev["disabled"] = True
        team = by_id.get(key.team_id or "")
        if team is not None:  # a team is named by its alias; one whose alias is not a roster name stays out
            dev["team"] = used.setdefault(team.alias or "", team).alias
        developers.append(dev)
    # No proxy.url: the operator names the proxy (a URL written here would be refused wherever CI reaches it by
    # another address).
    doc = {"version": 1,
           "keys": {"alias": template, "delivery_dir": "keys", "admin_recipients": [], "adopt_unmanaged": True}}
    if used:
        doc["teams"] = [{"name": name, **({"models": sorted(t.models)} if t.models else {}),
                         **{f: v for f, v in t.settings().items() if v is not None}}
                        for name, t in sorted(used.items())]
    doc["developers"] = developers
    header = (f"# yaml-language-server: $schema={SCHEMA_FILE}\n"
              f"# Written by `reconcile import` from the keys on {proxy_url}. Before the first apply:\n"
              f"#  - replace each {PLACEHOLDER} with that developer's public key;\n"
              "#  - add your admins' public keys to keys.admin_recipients (they may decrypt every key file);\n"
              "#  - keys.adopt_unmanaged: true takes the existing keys (and teams) over in place, so nobody's key "
              "changes\n#    (it needs RECONCILE_PROOF_KEY); set it to false after that first apply, so that a key "
              "made by hand\n#    later is a conflict to decide, not taken over.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=120), len(developers)
