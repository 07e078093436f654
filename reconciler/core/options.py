"""The operator's choices for one plan, made on the command line rather than in the roster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .roster import Roster


@dataclass(frozen=True)
class Options:
    adopt: frozenset[str] = frozenset()
    replace: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    no_delete: bool = False
    restore: bool = False  # register again the secrets of proven key files whose keys the proxy lost
    reencrypt: bool = False  # RECONCILE_REENCRYPT: apply holds an identity that decrypts the key files
    recover_from: str | None = None  # where the key files of an apply that could not push them were unpacked


def options_for(roster: Roster, *, adopt: list[str] | None = None, replace: list[str] | None = None,
                only: list[str] | None = None, no_delete: bool = False, restore: bool = False,
                reencrypt: bool = False, recover_from: str | None = None) -> Options:
    names = {d.name for d in roster.developers}
    for flag, given in (("adopt", adopt), ("replace", replace)):  # --only may name a developer who left
        for name in given or []:
            if name not in names:
                raise ConfigError(f"--{flag} {name}: no developer of that name in {roster.path}")
    return Options(adopt=frozenset(adopt or ()), replace=frozenset(replace or ()),
                   only=frozenset(only) if only else None, no_delete=no_delete, restore=restore,
                   reencrypt=reencrypt, recover_from=recover_from)
