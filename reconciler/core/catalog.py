"""What the proxy serves, from /model/info: names clients may ask for, and the model each routes to."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import closest

# Names that grant more than one model: LiteLLM's wildcard routes and its special names.
SPECIAL_MODELS = frozenset({"all-proxy-models", "all-team-models"})


def is_wildcard(model: str) -> bool:
    return "*" in model or model in SPECIAL_MODELS


def _norm(name: str) -> str:
    return re.sub(r"[._\s]+", "-", name.rsplit("/", 1)[-1].lower())


@dataclass(frozen=True)
class ModelCatalog:
    underlying: dict[str, str] = field(default_factory=dict)  # model_name -> litellm_params.model

    @classmethod
    def from_model_info(cls, data: list[dict[str, Any]]) -> ModelCatalog:
        underlying = {}
        for entry in data:
            name = entry.get("model_name")
            if isinstance(name, str):
                params = entry.get("litellm_params") or {}
                underlying[name] = str(params.get("model") or name)
        return cls(underlying)

    @property
    def names(self) -> list[str]:
        return sorted(self.underlying)

    def serves(self, name: str) -> bool:
        if name in self.underlying or name == "*" or name in SPECIAL_MODELS:
            return True  # LiteLLM's own special names grant whatever the proxy serves
        # A wildcard model_name (anthropic/*) routes any matching name a client asks for.
        return any("*" in served and fnmatch.fnmatchcase(name, served) for served in self.underlying)

    def suggest(self, name: str) -> str | None:
        """The served name a user most likely meant: the same underlying model first, then the closest spelling."""
        want = _norm(name)
        same = [n for n, model in sorted(self.underlying.items())
                if "*" not in n and (want in (_norm(n), _norm(model)) or _norm(model).startswith(want + "-")
                                     or _norm(n).startswith(want + "-"))]
        if same:
            return same[0]
        close = closest(name, [n for n in self.names if "*" not in n])
        return close[0] if close else None

    def unknown_message(self, name: str) -> str:
        hint = self.suggest(name)
        return f"{name} is not served by this proxy; " + (f"did you mean {hint}?" if hint else
                                                           f"it serves: {', '.join(self.names) or 'nothing'}")

    def aliases_of(self, name: str) -> set[str]:
        """Every served name that routes to the same model as `name`, itself included."""
        model = self.underlying.get(name)
        if model is None:
            return {name}
        return {n for n, m in self.underlying.items() if m == model and "*" not in n}
