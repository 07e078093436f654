"""One scripted sequence of requests goes to the sandbox and to LiteLLM's real app; status codes and bodies must
agree, apart from the values named in VOLATILE (timestamps, and what derives from randomly generated keys)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import httpx
from helpers import MASTER

from litellm_roster_sandbox import start_sandbox
from litellm_roster_sandbox.server import load_models

MODELS = Path(__file__).parent.parent / "data" / "litellm" / "proxy-config.yaml"

KEY_A, KEY_B = "sk-differential-key-a-000001", "sk-differential-key-b-000002"
HASH_A, HASH_B = (hashlib.sha256(k.encode()).hexdigest() for k in (KEY_A, KEY_B))
AUTH = {"Authorization": f"Bearer {MASTER}"}

# Values that are meant to differ between two runs of the same script, by name wherever they appear.
VOLATILE = {"created_at", "updated_at", "settings_updated_at", "expires", "deleted_at", "budget_reset_at",
            "last_active", "id"}

# (name, method, path, body or query, headers) — headers None means the master key.
SCRIPT: list[tuple[str, str, str, Any, dict | None]] = [
    ("generate a", "POST", "/key/generate", {"key": KEY_A, "key_alias": "alias-a", "models": ["claude-3-opus-20240229"],
                                             "user_id": "jane", "metadata": {"team": "x"}, "max_budget": 5,
                                             "duration": "1h", "rpm_limit": 10}, None),
    ("generate b", "POST", "/key/generate", {"key": KEY_B, "key_alias": "alias-b", "user_id": "john"}, None),
    ("duplicate alias", "POST", "/key/generate", {"key_alias": "alias-a"}, None),
    ("models not a list", "POST", "/key/generate", {"models": "claude"}, None),
    ("key without sk-", "POST", "/key/generate", {"key": "abc-0123456789012345"}, None),
    ("duration without unit", "POST", "/key/generate", {"duration": "30"}, None),
    ("repost a with another alias", "POST", "/key/generate", {"key": KEY_A, "key_alias": "alias-a2"}, None),
    ("info a after repost", "GET", "/key/info", {"key": HASH_A}, None),
    ("list hashes", "GET", "/key/list", {"size": 1, "page": 1}, None),
    ("list page 2", "GET", "/key/list", {"size": 1, "page": 2}, None),
    ("list size 101", "GET", "/key/list", {"size": 101}, None),
    ("list by alias", "GET", "/key/list", {"key_alias": "alias-b"}, None),
    ("info unknown", "GET", "/key/info", {"key": "f" * 64}, None),
    ("update models and metadata", "POST", "/key/update", {"key": HASH_B, "models": ["claude-sonnet-4.5"],
                                                           "metadata": {"new": 1}}, None),
    ("info b after update", "GET", "/key/info", {"key": HASH_B}, None),
    ("update unknown", "POST", "/key/update", {"key": "f" * 64, "models": []}, None),
    ("update neither key nor alias", "POST", "/key/update", {"models": []}, None),
    ("rename to taken alias", "POST", "/key/update", {"key": HASH_B, "key_alias": "alias-a"}, None),
    ("b sees its models", "GET", "/v1/models", None, {"Authorization": f"Bearer {KEY_B}"}),
    ("block b", "POST", "/key/block", {"key": HASH_B}, None),
    ("blocked b on models", "GET", "/v1/models", None, {"Authorization": f"Bearer {KEY_B}"}),
    ("block malformed", "POST", "/key/block", {"key": "not a key"}, None),
    ("block unknown", "POST", "/key/block", {"key": "f" * 64}, None),
    ("unblock b", "POST", "/key/unblock", {"key": HASH_B}, None),
    ("delete b and unknown", "POST", "/key/delete", {"keys": [HASH_B, "f" * 64]}, None),
    ("info deleted b", "GET", "/key/info", {"key": HASH_B}, None),
    ("deleted b on models", "GET", "/v1/models", None, {"Authorization": f"Bearer {KEY_B}"}),
    ("delete b again", "POST", "/key/delete", {"keys": [HASH_B]}, None),
    ("delete neither", "POST", "/key/delete", {}, None),
    ("no credential", "GET", "/v1/models", None, {}),
    ("no Bearer prefix", "GET", "/v1/models", None, {"Authorization": "Token abc"}),
    ("not an sk- key", "GET", "/v1/models", None, {"Authorization": "Bearer abcdefghijkl"}),
    ("unknown key", "GET", "/v1/models", None, {"Authorization": "Bearer sk-unknown-key-1234567"}),
    ("master models", "GET", "/v1/models", None, None),
    ("model info", "GET", "/model/info", None, None),
]


def run(url: str) -> list[tuple[str, int, Any]]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, method, path, payload, headers in SCRIPT:
            headers = AUTH if headers is None else headers
            if method == "GET":
                r = client.get(path, params=payload, headers=headers)
            else:
                r = client.post(path, json=payload, headers=headers)
            try:
                body = r.json()
            except ValueError:
                body = r.text
            out.append((name, r.status_code, body))
    return out


def normalize(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: ("<volatile>" if k in VOLATILE else normalize(v)) for k, v in sorted(body.items())}
    if isinstance(body, list):
        return [normalize(v) for v in body]
    return body


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where the sandbox disagrees with LiteLLM. Fields LiteLLM sends that the sandbox lacks count; fields only the
    sandbox sends count too."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in theirs:
                out.append(f"{path}.{key}: only in the sandbox")
            elif key not in ours:
                out.append(f"{path}.{key}: missing from the sandbox (LiteLLM: {str(theirs[key])[:60]})")
            else:
                out.extend(differences(ours[key], theirs[key], f"{path}.{key}"))
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        pairs = enumerate(zip(ours, theirs, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: sandbox {str(ours)[:80]!r} != LiteLLM {str(theirs)[:80]!r}"]


# Differences accepted, each with its reason: model metadata that LiteLLM copies from its bundled cost map (hundreds
# of fields per model, changing with every LiteLLM release). The tool reads only `id` on /v1/models and `model_name`
# and `litellm_params.model` on /model/info, which are compared.
TOLERATED: dict[str, str] = {
    **dict.fromkeys(("mode", "max_input_tokens", "max_output_tokens"), "/v1/models: cost-map metadata"),
}
TOLERATED_UNDER = ("data[*].model_info", "data[*].litellm_params")  # /model/info: cost map and router flags


def test_sandbox_answers_as_litellm_does(litellm):
    with start_sandbox(master_key=MASTER, models=load_models(MODELS)) as sandbox:
        ours = run(sandbox.url)
    theirs = run(litellm.url)
    report = []
    for (name, status_a, body_a), (_, status_b, body_b) in zip(ours, theirs, strict=True):
        if status_a != status_b:
            report.append(f"{name}: status sandbox {status_a} != LiteLLM {status_b} ({str(body_b)[:160]})")
            continue
        for diff in differences(normalize(body_a), normalize(body_b)):
            where = diff.split(":")[0]
            field = where.rsplit(".", 1)[-1]
            generic = re.sub(r"\[\d+\]", "[*]", where).lstrip(".")
            if field in TOLERATED or generic.startswith(TOLERATED_UNDER) and not generic.endswith(
                    ("litellm_params.model",)):
                continue
            report.append(f"{name}: {diff}")
    assert not report, "\n".join(report)
