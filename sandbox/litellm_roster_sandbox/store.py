"""The sandbox's key table and the route logic, following docs/litellm.md. No HTTP here: each route is a method that
takes parsed input and returns (status, body), so the rules can be read in one place.

Keys are kept in an index ordered by (created_at, token), so a page of /key/list is a slice, not a sort.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
import secrets
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

Response = tuple[int, Any]
MASTER_USER_ID = "default_user_id"
MIN_CUSTOM_KEY_LENGTH = 16
_WRITE_ROUTES = frozenset({"/key/generate", "/key/update", "/key/delete", "/key/block", "/key/unblock", "/user/new",
                           "/user/update", "/user/delete"})
# What a key with allowed_routes ["llm_api_routes"] may call (docs/litellm.md §11).
_LLM_ROUTES = frozenset({"/v1/models", "/models", "/chat/completions", "/v1/chat/completions"})
_USER_ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
_BLOCKABLE = re.compile(r"^(sk-[A-Za-z0-9_-]+|[0-9a-f]{64})$")

# The columns of LiteLLM_VerificationToken (openapi-keys.json), with LiteLLM's defaults for a new key.
_ROW_DEFAULTS: dict[str, Any] = {
    "key_name": None, "key_alias": None, "spend": 0.0, "expires": None, "models": [], "aliases": {}, "config": {},
    "user_id": None, "team_id": None, "permissions": {}, "max_parallel_requests": None, "metadata": {},
    "blocked": None, "tpm_limit": None, "rpm_limit": None, "tpd_limit": None, "max_budget": None,
    "budget_duration": None, "budget_reset_at": None, "allowed_cache_controls": [], "allowed_routes": [],
    "model_spend": {}, "model_max_budget": {}, "budget_id": None, "organization_id": None, "project_id": None,
    "object_permission_id": None, "created_at": None, "created_by": None, "updated_at": None, "updated_by": None,
    "last_active": None, "rotation_count": 0, "auto_rotate": False, "rotation_interval": None,
    "key_rotation_at": None, "last_rotation_at": None, "key_type": "default", "access_group_ids": [],
    "agent_id": None, "budget_limits": None, "router_settings": {}, "soft_budget_cooldown": False,
    "total_spend": 0.0, "budget_fallbacks": {}, "policies": [], "settings_updated_at": None,
}
# /key/block and /key/unblock answer with LiteLLM's LiteLLM_VerificationToken model: these fields, in this order,
# with `org_id` where the table says organization_id (observed against LiteLLM 1.108.7 in the conformance tier).
_BLOCK_FIELDS = (
    "token", "key_name", "key_alias", "spend", "total_spend", "max_budget", "expires", "models", "aliases", "config",
    "user_id", "team_id", "agent_id", "project_id", "max_parallel_requests", "metadata", "tpm_limit", "rpm_limit",
    "tpd_limit", "budget_duration", "budget_reset_at", "allowed_cache_controls", "allowed_routes", "key_type",
    "permissions", "model_spend", "model_max_budget", "budget_fallbacks", "soft_budget_cooldown", "blocked",
    "litellm_budget_table", "budget_id", "org_id", "created_at", "created_by", "updated_at", "updated_by",
    "settings_updated_at", "last_active", "object_permission_id", "object_permission", "access_group_ids",
    "rotation_count", "auto_rotate", "rotation_interval", "last_rotation_at", "key_rotation_at", "router_settings",
    "budget_limits")
# LiteLLM_VerificationToken's relations: Prisma's model carries each, null when not loaded, in the answers of
# /key/info, /key/update and /key/unblock (observed against LiteLLM 1.108.7 on PostgreSQL).
_RELATIONS = dict.fromkeys(("litellm_budget_table", "litellm_organization_table", "litellm_project_table",
                            "object_permission", "jwt_key_mappings"))
# generate echoes every KeyRequestBase field; these it echoes as null unless given (premium or unused here).
_GENERATE_ECHO_NULLS = (
    "agent_id", "budget_limits", "model_rpm_limit", "model_tpm_limit", "mcp_rpm_limit", "tag_rpm_limit", "guardrails",
    "policies", "prompts", "object_permission", "default_estimated_output_tokens",
    "default_estimated_output_tokens_per_model", "budget_id", "end_user_budget_id", "disable_global_guardrails",
    "enable_prompt_caching", "throttle_on_budget_exceeded", "enforced_params", "allowed_passthrough_routes",
    "denied_passthrough_routes", "allowed_vector_store_indexes", "rpm_limit_type", "tpm_limit_type")
_ROUTER_SETTINGS_ECHO = dict.fromkeys(
    ("routing_strategy_args", "routing_strategy", "routing_groups", "retry_policy", "model_group_retry_policy",
     "model_group_affinity_config", "allowed_fails", "cooldown_time", "num_retries", "timeout", "max_retries",
     "retry_after", "fallbacks", "context_window_fallbacks"))
_ROUTER_SETTINGS_ECHO.update({"model_group_alias": {}, "enable_tag_filtering": None, "weights": None,
                              "tag_routing_prefix": None, "optional_pre_call_checks": None,
                              "fallback_on_unsupported_params": None})
_SETTABLE = ("key_alias", "models", "user_id", "team_id", "metadata", "blocked", "tpm_limit", "rpm_limit",
             "tpd_limit", "max_parallel_requests", "max_budget", "budget_duration", "aliases", "config",
             "permissions", "allowed_cache_controls", "allowed_routes", "organization_id", "project_id")
_LIST_FIELDS = ("models", "allowed_cache_controls", "allowed_routes")
_DICT_FIELDS = ("metadata", "aliases", "config", "permissions")
_INT_FIELDS = ("tpm_limit", "rpm_limit", "tpd_limit", "max_parallel_requests")


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def error(status: int, message: str, type_: str, param: Any = None) -> Response:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": str(status)}}


def detail(loc: list, type_: str, msg: str) -> Response:
    return 422, {"detail": [{"type": type_, "loc": loc, "msg": msg}]}


def duration_seconds(value: str) -> int:
    """LiteLLM's duration parser: a prefix match, so '30days' is 30d; a bare number is an error (§1)."""
    m = re.match(r"(\d+)(mo|[smhdw]?)", value)
    if not m:
        raise ValueError("Invalid duration format")
    number, unit = int(m.group(1)), m.group(2)
    if unit == "":
        raise ValueError(f"Unsupported duration unit, passed duration: {value}")
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 2592000}[unit]


class KeyStore:
    def __init__(self, master_key: str, models: list[dict[str, Any]], clock: Callable[[], datetime] | None = None):
        self.master_key = master_key
        self.models = models
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.offset = timedelta(0)
        self.rows: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self._order: list[tuple[str, str]] = []  # (created_at, token), ascending
        self._tokens: list[str] = []  # ascending: /key/list by token pages from it
        self.lock = threading.RLock()
        # Every plaintext ever registered, so tests can scan a run's output for them. A real proxy keeps none.
        self.plaintexts: list[str] = []
        self.users: dict[str, dict[str, Any]] = {}  # user_id -> row; a key's rights follow its user's role

    def role(self, caller: str) -> str:
        if caller == "master":
            return "proxy_admin"
        user = self.rows[caller].get("user_id")
        return (self.users.get(user) or {}).get("user_role") or "internal_user"

    def reads_all(self, caller: str) -> bool:
        """The master key, and a proxy_admin_viewer's key: LiteLLM gives the viewer read parity with the admin."""
        return self.role(caller) in ("proxy_admin", "proxy_admin_viewer")

    def now(self) -> datetime:
        return self._clock() + self.offset

    # ------------------------------------------------------------ auth (§6, §8)

    def authenticate(self, headers: dict[str, str], route: str) -> tuple[str | None, Response | None]:
        """('master' or a key's hash, None), or (None, error response)."""
        raw = headers.get("x-litellm-api-key")
        if raw is None:
            auth = headers.get("authorization")
            if auth is None:
                raw = headers.get("api-key") or headers.get("x-api-key")
                if raw is None:
                    return None, error(401, "Authentication Error, No api key passed in.", "auth_error", "None")
            elif auth.lower().startswith("bearer "):
                raw = auth[7:].strip()
            else:
                return None, error(401, "Authentication Error, Malformed API Key passed in. Ensure Key has "
                                        "`Bearer ` prefix.", "auth_error", "None")
        elif raw.lower().startswith("bearer "):
            raw = raw[7:].strip()
        if secrets.compare_digest(raw.encode(), self.master_key.encode()):
            return "master", None
        if not raw.startswith("sk-"):
            masked = f"{raw[:4]}****{raw[-4:]}"
            return None, error(401, f"LiteLLM Virtual Key expected. Received={masked}, expected to start with "
                                    "'sk-'.", "auth_error", "None")
        token = hash_token(raw)
        row = self.rows.get(token)
        if row is None:
            return None, error(401, "Authentication Error, Invalid API key provided.", "token_not_found_in_db",
                               "key")
        if row.get("blocked"):
            return None, error(401, "Authentication Error, Key is blocked. Update via `/key/unblock` if you're "
                                    "an admin.", "auth_error", "None")
        if self._expired(row):
            return None, error(401, f"Authentication Error - Expired Key. Key Expiry time {row['expires']} and "
                                    f"current time {_iso(self.now())}", "expired_key", f"sk-...{token[-4:]}")
        if row.get("allowed_routes") == ["llm_api_routes"] and route not in _LLM_ROUTES:
            return None, error(403, "Virtual key is not allowed to call this route. Only allowed to call routes: "
                                    f"['llm_api_routes']. Tried to call route: {route}", "auth_error", "None")
        role = (self.users.get(row.get("user_id")) or {}).get("user_role")
        if role == "internal_user_viewer" and route in _WRITE_ROUTES:
            return None, error(401, "Authentication Error, Only proxy admin can be used to generate, delete, update "
                                    f"info for new keys/users/teams. Route={route}. Your role={role}. Your "
                                    "user_id=********", "auth_error", "None")
        if role == "proxy_admin_viewer" and route in _WRITE_ROUTES:
            return None, error(403, f"user not allowed to access this route, role= {role}. Trying to access: "
                                    f"{route}", "auth_error", "None")
        if route in _WRITE_ROUTES and row.get("user_id") is None:
            return None, error(401, "Authentication Error, Only proxy admin can be used to generate, delete, "
                                    f"update info for new keys/users/teams. Route={route}. Your role=unknown. "
                                    "Your user_id=*******", "auth_error", "None")
        return token, None

    # ------------------------------------------------------------ index

    def clear(self) -> None:
        """No keys and no users, as a fresh proxy (tests)."""
        with self.lock:
            self.users.clear()
            self.deleted.clear()
            self.rows.clear()
            self.aliases.clear()
            self._order.clear()
            self._tokens.clear()

    def _insert(self, row: dict[str, Any]) -> None:
        self.rows[row["token"]] = row
        bisect.insort(self._order, (row["created_at"], row["token"]))
        bisect.insort(self._tokens, row["token"])
        if row.get("key_alias"):
            self.aliases[row["key_alias"]] = row["token"]

    def _remove(self, token: str) -> dict[str, Any]:
        row = self.rows.pop(token)
        del self._order[bisect.bisect_left(self._order, (row["created_at"], token))]
        del self._tokens[bisect.bisect_left(self._tokens, token)]
        if row.get("key_alias") and self.aliases.get(row["key_alias"]) == token:
            del self.aliases[row["key_alias"]]
        return row

    def _set_alias(self, row: dict[str, Any], alias: str | None) -> None:
        old = row.get("key_alias")
        if old and self.aliases.get(old) == row["token"]:
            del self.aliases[old]
        row["key_alias"] = alias
        if alias:
            self.aliases[alias] = row["token"]

    def _resolve(self, key: str) -> str:
        return hash_token(key) if key.startswith("sk-") else key

    # ------------------------------------------------------------ body checks shared by generate and update

    def _check_body(self, body: dict[str, Any]) -> Response | None:
        for name in _LIST_FIELDS:
            if name in body and body[name] is not None and not isinstance(body[name], list):
                return detail(["body", name], "list_type", "Input should be a valid list")
        for name in _DICT_FIELDS:
            if name in body and body[name] is not None and not isinstance(body[name], dict):
                return detail(["body", name], "dict_type", "Input should be a valid dictionary")
        for name in _INT_FIELDS:
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                return detail(["body", name], "int_type", "Input should be a valid integer")
        budget = body.get("max_budget")
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)):
                return detail(["body", "max_budget"], "float_type", "Input should be a valid number")
            if not math.isfinite(budget) or budget < 0:
                return error(400, f"max_budget must be a finite, non-negative number. Got {budget}",
                             "bad_request_error", "max_budget")
        for name in ("key_alias", "user_id", "team_id", "budget_duration", "duration", "key"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                return detail(["body", name], "string_type", "Input should be a valid string")
        alias = body.get("key_alias")
        if alias is not None and (re.search(r"[\x00-\x1f\x7f]", alias) or ".." in alias):
            return error(400, f"Invalid key_alias: {alias!r}", "bad_request_error", "key_alias")
        if body.get("tags") is not None:
            return error(403, "{'error': 'This feature is only available for LiteLLM Enterprise users: tags. "
                              "Go here to get a license key - https://www.litellm.ai/enterprise'}",
                         "internal_server_error", None)
        return None

    def _alias_taken(self, alias: str | None, except_token: str | None = None) -> Response | None:
        if alias and self.aliases.get(alias) not in (None, except_token):
            return error(400, f"Key with alias '{alias}' already exists. Unique key aliases across all keys are "
                              "required.", "bad_request_error", "key_alias")
        return None

    # ------------------------------------------------------------ routes

    def generate(self, caller: str, body: dict[str, Any]) -> Response:
        if (bad := self._check_body(body)) is not None:
            return bad
        key = body.get("key")
        if key is not None:
            if not key.startswith("sk-"):
                message = f"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {key[:4]}****" \
                          f"{key[-4:]}"
                return error(400, str({"error": message}), "internal_server_error", None)  # a str()-ed dict (§6)
            if len(key) < MIN_CUSTOM_KEY_LENGTH:
                return error(400, f"Custom key must be at least {MIN_CUSTOM_KEY_LENGTH} characters long.",
                             "bad_request_error", None)
        else:
            key = "sk-" + secrets.token_urlsafe(16)
        with self.lock:
            if (taken := self._alias_taken(body.get("key_alias"))) is not None:
                return taken
            now = self.now()
            expires = None
            if body.get("duration") is not None:
                try:
                    expires = now + timedelta(seconds=duration_seconds(body["duration"]))
                except ValueError as exc:
                    return error(500, str(exc), "internal_server_error", None)
            token = hash_token(key)
            user = MASTER_USER_ID if caller == "master" else self.rows[caller].get("user_id")
            row = {**_ROW_DEFAULTS, "token": token, "key_name": f"sk-...{key[-4:]}", "created_at": _iso(now),
                   "updated_at": _iso(now), "created_by": user, "updated_by": user, "expires": _iso(expires)}
            for name in _SETTABLE:
                if body.get(name) is not None:
                    row[name] = body[name]
            if caller != "master":
                row["user_id"] = user
            if token not in self.rows:  # an upsert whose update is empty: re-posting a key changes nothing (§1)
                self._insert(row)
                self.plaintexts.append(key)
        # The response echoes the request (with the request's defaults), not the stored row: so re-posting a key
        # answers with the new values while the row keeps the old ones (§1).
        echo = {**_ROW_DEFAULTS, "user_id": user if caller != "master" else None,
                **{k: body[k] for k in _SETTABLE if body.get(k) is not None}}
        response = {**{k: echo[k] for k in (
                        "key_alias", "models", "spend", "max_budget", "user_id", "team_id", "metadata", "tpm_limit",
                        "rpm_limit", "tpd_limit", "budget_duration", "max_parallel_requests", "allowed_routes",
                        "allowed_cache_controls", "aliases", "config", "permissions", "organization_id", "project_id",
                        "model_max_budget", "budget_fallbacks")},
                    **dict.fromkeys(_GENERATE_ECHO_NULLS), "router_settings": dict(_ROUTER_SETTINGS_ECHO),
                    "blocked": body.get("blocked"), "key": key, "token": token, "token_id": token,
                    "key_name": f"sk-...{key[-4:]}", "expires": _iso(expires), "duration": None,
                    "created_at": _iso(now), "updated_at": _iso(now), "created_by": user, "updated_by": user,
                    "key_type": "default", "tags": None, "litellm_budget_table": None, "access_group_ids": []}
        return 200, response

    def seed(self, rows: list[dict[str, Any]], users: list[dict[str, Any]] | None = None) -> Response:
        """Insert rows directly (benchmarks: thousands of keys without thousands of requests). Each row gives a
        plaintext `key` or a `token` hash, and any columns; each user a `user_id` and any columns."""
        now = _iso(self.now())
        with self.lock:
            for given in users or []:
                self.users.setdefault(given["user_id"], {**self._user_row(given["user_id"]), **given})
            for given in rows:
                token = hash_token(given["key"]) if "key" in given else given["token"]
                if token in self.rows or (given.get("key_alias") and given["key_alias"] in self.aliases):
                    continue
                row = {**_ROW_DEFAULTS, "created_at": now, "updated_at": now, "created_by": MASTER_USER_ID,
                       **{k: v for k, v in given.items() if k != "key"}, "token": token}
                self._insert(row)
        return 200, {"keys": len(self.rows)}

    def _status(self, row: dict[str, Any]) -> str:
        if row.get("blocked"):
            return "revoked"
        return "expired" if self._expired(row) else "active"

    def _expired(self, row: dict[str, Any]) -> bool:
        expires = row.get("expires")
        return bool(expires) and datetime.fromisoformat(expires.replace("Z", "+00:00")) < self.now()

    def info(self, caller: str, key: str | None) -> Response:
        token = self._resolve(key) if key else caller
        with self.lock:
            row = self.rows.get(token)
            if row is not None:
                mine = self.rows.get(caller, {})
                if not self.reads_all(caller) and token != caller and row.get("user_id") != mine.get("user_id"):
                    return error(403, "You are not allowed to access this key's info. Your role=unknown",
                                 "auth_error", "None")
                info = {k: v for k, v in row.items() if k != "token"}
                info.update({**_RELATIONS, "status": self._status(row)})
                return 200, {"key": key if key else token, "info": info}
            archived = self.deleted.get(token)
            if archived is not None and caller == "master":
                info = {k: v for k, v in archived.items() if k != "token"}
                info.update({"litellm_budget_table": None, "object_permission": None, "status": "deleted",
                             "org_id": archived.get("organization_id")})
                info.pop("policies", None)
                return 200, {"key": key, "info": info}
        return error(404, "Key not found in database", "not_found_error", "key")

    def list(self, caller: str, query: dict[str, str]) -> Response:
        try:
            page = int(query.get("page", "1"))
            size = int(query.get("size", "10"))
        except ValueError:
            return detail(["query", "size"], "int_parsing", "Input should be a valid integer, unable to parse "
                                                            "string as an integer")
        if size > 100:
            return detail(["query", "size"], "less_than_equal", "Input should be less than or equal to 100")
        if size < 1:
            return detail(["query", "size"], "greater_than_equal", "Input should be greater than or equal to 1")
        if page < 1:
            return detail(["query", "page"], "greater_than_equal", "Input should be greater than or equal to 1")
        sort_by = query.get("sort_by", "created_at")
        if sort_by not in ("spend", "max_budget", "created_at", "updated_at", "token", "key_alias"):
            return error(400, f"Invalid sort_by: {sort_by}", "bad_request_error", "None")
        order = query.get("sort_order", "desc")
        status = query.get("status")
        if status is not None and status not in ("active", "expired", "revoked", "deleted"):
            return error(400, f"Invalid status: {status}", "bad_request_error", "None")
        full = query.get("return_full_object", "false").lower() == "true"
        with self.lock:
            if not self.reads_all(caller):
                own = self.rows[caller].get("user_id")
                if own is None:
                    return error(403, "You are not authorized to access this endpoint. No 'user_id' is associated "
                                      "with your API key.", "auth_error", "None")
                query = {**query, "user_id": own}
            filtered = any(query.get(f) for f in ("user_id", "team_id", "key_alias", "key_hash", "search"))
            if status == "deleted":
                rows = sorted(self.deleted.values(), key=lambda r: (r["created_at"], r["token"]))
            elif sort_by in ("created_at", "token") and not filtered and status is None:
                rows = None  # served from an index below
            else:
                rows = [self.rows[t] for _, t in self._order]
                rows = [r for r in rows if self._matches(r, query, status)]
                if sort_by != "created_at":
                    rows.sort(key=lambda r: (r.get(sort_by) is None, r.get(sort_by) or 0, r["token"]))
            total = len(self._order) if rows is None else len(rows)
            start = (page - 1) * size
            if rows is None:
                index = self._tokens if sort_by == "token" else [t for _, t in self._order]
                if order == "desc":
                    lo, hi = max(0, total - start - size), max(0, total - start)
                    selected = [self.rows[t] for t in reversed(index[lo:hi])]
                else:
                    selected = [self.rows[t] for t in index[start:start + size]]
            else:
                if order == "desc":
                    rows = rows[::-1]
                selected = rows[start:start + size]
            keys = [self._full_object(r) if full else r["token"] for r in selected]
        return 200, {"keys": keys, "total_count": total, "current_page": page,
                     "total_pages": math.ceil(total / size) if total else 0}

    def _matches(self, row: dict[str, Any], query: dict[str, str], status: str | None) -> bool:
        for name in ("user_id", "team_id"):
            if query.get(name) and row.get(name) != query[name]:
                return False
        if query.get("key_hash") and row["token"] != query["key_hash"]:
            return False
        alias = query.get("key_alias")
        if alias:
            have = row.get("key_alias") or ""
            if query.get("substring_matching", "false").lower() == "true":
                if alias.lower() not in have.lower():
                    return False
            elif have != alias:
                return False
        search = query.get("search")
        if search and search != row["token"] and search not in (row.get("key_alias") or ""):
            return False
        return status is None or self._status(row) == status

    def _full_object(self, row: dict[str, Any]) -> dict[str, Any]:
        # /key/list's full objects are UserAPIKeyAuth: the row plus the caller-context fields, mostly null (§3).
        return {**row, "api_key": None, "org_id": row.get("organization_id"), "team_alias": None,
                "team_models": [], "team_blocked": False, "user_role": None, "user_email": None,
                "parent_otel_span": None, "soft_budget": None, "team_spend": None, "team_max_budget": None}

    def update(self, caller: str, body: dict[str, Any]) -> Response:
        key, alias_target = body.get("key"), body.get("key_alias")
        if (bad := self._check_body(body)) is not None:
            return bad
        with self.lock:
            if key is not None:
                token = self._resolve(key)
                row = self.rows.get(token)
                if row is None:
                    return error(404, "Key not found.", "not_found_error", "key")
            elif alias_target is not None:
                token = self.aliases.get(alias_target)
                if token is None:
                    return error(404, f"Key not found. No key with key_alias='{alias_target}'.",
                                 "not_found_error", "key")
                row = self.rows[token]
            else:
                return detail(["body"], "value_error", "Value error, either key or key_alias must be provided")
            if caller != "master" and row.get("user_id") != self.rows[caller].get("user_id"):
                return error(403, "You are not authorized to update this key", "auth_error", "None")
            if "key_alias" in body and key is not None:
                if (taken := self._alias_taken(body["key_alias"], except_token=token)) is not None:
                    return taken
                self._set_alias(row, body["key_alias"])
            for name in _SETTABLE:
                if name in body and name != "key_alias":
                    row[name] = body[name] if body[name] is not None or name not in _LIST_FIELDS + _DICT_FIELDS \
                        else _ROW_DEFAULTS[name]
            if "duration" in body:
                value = body["duration"]
                if value is None or value == "-1":
                    row["expires"] = None
                elif value != "":
                    try:
                        row["expires"] = _iso(self.now() + timedelta(seconds=duration_seconds(value)))
                    except ValueError as exc:
                        return error(500, str(exc), "internal_server_error", None)
            row["updated_at"] = row["settings_updated_at"] = _iso(self.now())
            row["updated_by"] = MASTER_USER_ID if caller == "master" else self.rows[caller].get("user_id")
            return 200, {"key": key if key is not None else alias_target, **row, **_RELATIONS}

    def delete(self, caller: str, body: dict[str, Any], changed_by: str | None = None) -> Response:
        keys, aliases = body.get("keys"), body.get("key_aliases")
        if keys is None and aliases is None:
            return detail(["body"], "value_error",
                          "Value error, At least one of 'keys' or 'key_aliases' must be provided.")
        for name, value in (("keys", keys), ("key_aliases", aliases)):
            if value is not None and not isinstance(value, list):
                return detail(["body", name], "list_type", "Input should be a valid list")
        with self.lock:
            if keys is not None:
                tokens = [self._resolve(k) for k in keys if isinstance(k, str)]
            else:
                tokens = [self.aliases[a] for a in aliases if self.aliases.get(a)]
            found = [t for t in tokens if t in self.rows]
            if not found:
                return error(404, "{'error': 'No keys found'}", "internal_server_error", None)
            if caller != "master":
                own = self.rows[caller].get("user_id")
                if any(self.rows[t].get("user_id") != own for t in found):
                    return error(403, "You are not authorized to delete this key", "auth_error", None)
            for token in found:
                row = self._remove(token)
                self.deleted[token] = {**row, "id": str(uuid.uuid4()), "deleted_at": _iso(self.now()),
                                       "deleted_by": MASTER_USER_ID if caller == "master" else row.get("user_id"),
                                       "deleted_by_api_key": "litellm_proxy_master_key" if caller == "master"
                                       else caller, "litellm_changed_by": changed_by}
        return 200, {"deleted_keys": keys if keys is not None else aliases}

    def set_blocked(self, caller: str, body: dict[str, Any], blocked: bool) -> Response:
        key = body.get("key")
        if not isinstance(key, str):
            return detail(["body", "key"], "missing", "Field required")
        if not _BLOCKABLE.match(key):
            return error(400, "Invalid key format.", "bad_request_error", "key")
        with self.lock:
            row = self.rows.get(self._resolve(key))
            if row is None:
                return error(404, "Key not found.", "not_found_error", "key")
            row["blocked"] = blocked
            row["updated_at"] = row["settings_updated_at"] = _iso(self.now())
            if not blocked:  # unblock answers with the table row; block with LiteLLM's token model
                return 200, {**row, **_RELATIONS}
            view = {**row, "org_id": row.get("organization_id"), "litellm_budget_table": None,
                    "object_permission": None}
            return 200, {k: view.get(k) for k in _BLOCK_FIELDS}

    # ------------------------------------------------------------ users

    def _not_admin(self, caller: str, route: str) -> Response | None:
        if self.role(caller) == "proxy_admin":
            return None
        return error(401, "Authentication Error, Only proxy admin can be used to generate, delete, update info for "
                          f"new keys/users/teams. Route={route}.", "auth_error", "None")

    def _user_row(self, user_id: str, role: str | None = "internal_user") -> dict[str, Any]:
        """A new user as LiteLLM stores it: /user/new's default role is internal_user; /user/update sets none."""
        return {"user_id": user_id, "user_role": role, "models": [], "max_budget": None, "metadata": {}, "teams": [],
                "sso_user_id": None, "user_email": None, "spend": 0.0, "created_at": _iso(self.now())}

    def _set_user_fields(self, row: dict[str, Any], body: dict[str, Any]) -> Response | None:
        role = body.get("user_role")
        if role is not None and role not in _USER_ROLES:
            return error(400, f"Invalid user_role: {role}", "bad_request_error", "user_role")
        for name in ("user_role", "models", "metadata"):
            if body.get(name) is not None and body.get(name) != []:  # LiteLLM ignores models: [] on update
                row[name] = body[name]
        if "max_budget" in body:
            row["max_budget"] = body["max_budget"]
        return None

    def user_new(self, caller: str, body: dict[str, Any]) -> Response:
        if (denied := self._not_admin(caller, "/user/new")) is not None:
            return denied
        user_id = body.get("user_id") or str(uuid.uuid4())
        with self.lock:
            if user_id in self.users:
                return error(409, f"{{'error': 'User with id {user_id} already exists'}}", "invalid_request_error",
                             None)
            row = self._user_row(user_id)
            if (bad := self._set_user_fields(row, body)) is not None:
                return bad
            self.users[user_id] = row
        return 200, {**row, "key": None}

    def user_update(self, caller: str, body: dict[str, Any]) -> Response:
        """A user that does not exist is created, as LiteLLM does."""
        if (denied := self._not_admin(caller, "/user/update")) is not None:
            return denied
        user_id = body.get("user_id")
        if not isinstance(user_id, str):
            return error(400, "user_id is required", "bad_request_error", "user_id")
        with self.lock:
            row = self.users.get(user_id) or self._user_row(user_id, role=None)
            if (bad := self._set_user_fields(row, body)) is not None:
                return bad
            self.users[user_id] = row
            return 200, {"user_id": user_id, "data": dict(row)}

    def user_delete(self, caller: str, body: dict[str, Any]) -> Response:
        """Deletes the users' keys with them, as LiteLLM does."""
        if (denied := self._not_admin(caller, "/user/delete")) is not None:
            return denied
        ids = body.get("user_ids")
        if not isinstance(ids, list):
            return detail(["body", "user_ids"], "list_type", "Input should be a valid list")
        with self.lock:
            found = [u for u in ids if u in self.users]
            if not found:
                return 404, {"detail": {"error": f"User not found, passed user_id={','.join(map(str, ids))}"}}
            for user_id in found:
                del self.users[user_id]
                for token in [t for t, r in self.rows.items() if r.get("user_id") == user_id]:
                    self._remove(token)
        return 200, len(found)

    def user_list(self, caller: str, query: dict[str, str]) -> Response:
        if not self.reads_all(caller):
            return error(403, "You are not authorized to access this endpoint.", "auth_error", "None")
        try:
            page, size = int(query.get("page", "1")), int(query.get("page_size", "25"))
        except ValueError:
            return detail(["query", "page_size"], "int_parsing", "Input should be a valid integer")
        if size > 100 or size < 1 or page < 1:
            return detail(["query", "page_size"], "less_than_equal", "Input should be less than or equal to 100")
        with self.lock:
            rows = sorted(self.users.values(), key=lambda r: r["user_id"])
            wanted = query.get("user_ids")
            if wanted:
                rows = [r for r in rows if r["user_id"] in wanted.split(",")]
            selected = [dict(r) for r in rows[(page - 1) * size:page * size]]
        return 200, {"users": selected, "total": len(rows), "page": page, "page_size": size,
                     "total_pages": math.ceil(len(rows) / size) if rows else 0}

    def user_info(self, caller: str, user_id: str | None) -> Response:
        user_id = user_id or (None if caller == "master" else self.rows[caller].get("user_id"))
        row = self.users.get(user_id or "")
        if row is None:
            return error(404, f"User {user_id} not found", "internal_server_error", None)
        if not self.reads_all(caller) and self.rows[caller].get("user_id") != user_id:
            return error(403, "You are not allowed to view this user", "auth_error", "None")
        keys = [self._full_object(r) for r in self.rows.values() if r.get("user_id") == user_id]
        return 200, {"user_id": user_id, "user_info": dict(row), "keys": keys, "teams": []}

    # ------------------------------------------------------------ simulated use

    COST_PER_CALL = 0.25  # USD: enough that a few calls show in `reconcile status` and reach a small budget

    def chat(self, caller: str, body: dict[str, Any]) -> Response:
        """A completion that costs COST_PER_CALL, so spend and budgets can be tried (no model is called)."""
        model = body.get("model")
        user = self.users.get((self.rows.get(caller) or {}).get("user_id") or "") or {}
        if user.get("models") and model not in user["models"] and not (self.rows.get(caller) or {}).get("team_id"):
            return error(403, f"user not allowed to access model. This user can only access models={user['models']}. "
                              f"Tried to access {model}", "key_model_access_denied", "model")
        if not isinstance(model, str) or model not in self._names_for(caller):
            return error(403 if caller != "master" else 400, f"The requested model '{model}' is not available for "
                         "this API key, or the model name is invalid.", "key_model_access_denied", "model")
        with self.lock:
            row = self.rows.get(caller)
            if row is not None:
                budget = row.get("max_budget")
                if budget is not None and row["spend"] >= budget:
                    return error(422, f"Budget has been exceeded! Current cost: {row['spend']}, Max budget: "
                                      f"{budget}", "budget_exceeded", None)
                row["spend"] = round(row["spend"] + self.COST_PER_CALL, 6)
                row["last_active"] = _iso(self.now())
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "model": model,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "(sandbox: no model was called)"}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    # ------------------------------------------------------------ models (§7)

    def _names_for(self, caller: str) -> list[str]:
        served = [m["model_name"] for m in self.models]
        if caller == "master":
            return served
        scope = self.rows[caller].get("models") or []
        return list(scope) if scope else served

    def v1_models(self, caller: str) -> Response:
        data = [{"id": name, "object": "model", "created": 1677610602, "owned_by": "openai"}
                for name in self._names_for(caller)]
        return 200, {"data": data, "object": "list"}

    def model_info(self, caller: str) -> Response:
        allowed = set(self._names_for(caller))
        data = []
        for i, model in enumerate(self.models):
            if model["model_name"] in allowed:
                params = {k: v for k, v in (model.get("litellm_params") or {}).items() if k != "api_key"}
                data.append({"model_name": model["model_name"], "litellm_params": params,
                             "model_info": {"id": hashlib.sha256(f"{i}{model['model_name']}".encode()).hexdigest(),
                                            "db_model": False, "key": model["model_name"]}})
        return 200, {"data": data}
