"""The merged pull request on GitHub, as the apply job sees it (reconcile apply --github): the plan that was reviewed
on it, and where the results go. Only GitHub's REST API at GITHUB_API_URL, with the job's own token."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ConfigError, ProxyError, StalePlanError
from ..redact import REDACT

PLAN_MARKER = "<!-- litellm-roster-plan -->"  # the sticky plan comment (reusable-plan.yml writes it)
RESULT_MARKER = "<!-- litellm-roster-apply -->"
BOT = "github-actions[bot]"  # only the workflow's own comments are believed: anyone can write a comment
# Ruleset rules a direct push of the key files with the job's token cannot meet (GitHub's rule types).
BLOCKING_RULES = frozenset({"pull_request", "required_status_checks", "required_signatures", "required_deployments",
                            "update", "merge_queue", "code_scanning", "workflows"})
EMPTY_CHECKSUM = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"  # sha256("[]"): no changes


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str


class GitHub:
    def __init__(self, api_url: str, repository: str, token: str, *, timeout: float = 15.0):
        REDACT.add(token)
        self.repository = repository
        self.http = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28"})

    @classmethod
    def from_environment(cls) -> GitHub:
        env = os.environ
        missing = [v for v in ("GITHUB_REPOSITORY", "GITHUB_TOKEN") if not env.get(v)]
        if missing:
            raise ConfigError(f"--github and --push-check need {' and '.join(missing)} (the workflow sets "
                              "GITHUB_REPOSITORY; pass GITHUB_TOKEN: ${{ github.token }})")
        return cls(env.get("GITHUB_API_URL") or "https://api.github.com", env["GITHUB_REPOSITORY"],
                   env["GITHUB_TOKEN"])

    def close(self) -> None:
        self.http.close()

    def _get(self, route: str, **params: Any) -> Any:
        answer = self.http.get(route, params=params)
        if answer.status_code != 200:
            raise ProxyError(f"GET {route}", answer.status_code, REDACT.shorten(answer.text, 200))
        return answer.json()

    def merged_pull(self, sha: str) -> PullRequest | None:
        """The pull request whose merge made this commit, if any (a push without one, a schedule: None)."""
        for pull in self._get(f"/repos/{self.repository}/commits/{sha}/pulls"):
            if pull.get("merged_at") and pull.get("merge_commit_sha") == sha:
                return PullRequest(int(pull["number"]), str(pull["head"]["sha"]))
        return None

    def push_problem(self, branch: str) -> str | None:
        """Why GitHub would refuse the job's push of the key files to branch, or None. Asked before apply changes
        anything: refused afterwards, the new keys would be live with their files only on the runner."""
        info = self._get(f"/repos/{self.repository}/branches/{branch}")
        rules = self._get(f"/repos/{self.repository}/rules/branches/{branch}")
        found = sorted({str(rule.get("type")) for rule in rules if isinstance(rule, dict)} & BLOCKING_RULES)
        if info.get("protected"):
            found.insert(0, "branch protection")
        if not found:
            return None
        return (f"{branch} admits no direct push from this job ({', '.join(found)}), so the new keys' files could "
                "not be committed; nothing was changed. Give the apply job a route the rules admit: a deploy key with "
                "write access, listed as a bypass actor of the ruleset, in the ROSTER_PUSH_KEY secret (the workflow "
                "then pushes with it and skips this check)")

    def comments(self, number: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in range(1, 51):
            batch = self._get(f"/repos/{self.repository}/issues/{number}/comments", per_page=100, page=page)
            out += batch
            if len(batch) < 100:
                break
        return out

    def comment(self, number: int, body: str) -> None:
        answer = self.http.post(f"/repos/{self.repository}/issues/{number}/comments", json={"body": REDACT(body)})
        if answer.status_code != 201:
            raise ProxyError("POST comment", answer.status_code, REDACT.shorten(answer.text, 200))


_SECTION = re.compile(r"^### litellm-roster plan for [^\n]*?(?: \(environment ([a-z0-9-]+)\))?$", re.M)
_CHECKSUM = re.compile(r"^Checksum: `([0-9a-f]{64})`$", re.M)
_FOR = re.compile(r"^_For ([0-9a-f]{7,40}),", re.M)


def reviewed_checksum(pull: PullRequest, comments: list[dict[str, Any]], environment: str | None) -> str:
    """The checksum of the plan reviewed on the pull request for this environment: from the workflow's own sticky
    comment, which must be for the pull request's last commit. StalePlanError when there is none to trust."""
    ours = [c for c in comments if PLAN_MARKER in (c.get("body") or "")
            and (c.get("user") or {}).get("login") == BOT]
    if not ours:
        raise StalePlanError(f"pull request #{pull.number} has no plan comment by {BOT}: nothing was reviewed, so "
                             "nothing is applied (run the roster-apply workflow by hand with the checksum of a plan "
                             "you reviewed)")
    body = ours[-1]["body"]
    made_for = _FOR.search(body)
    if not made_for or not pull.head_sha.startswith(made_for.group(1)):
        raise StalePlanError(f"the plan comment on #{pull.number} is not for its last commit ({pull.head_sha[:12]}): "
                             "the merged roster was never planned")
    sections = list(_SECTION.finditer(body))
    for i, section in enumerate(sections):
        if (section.group(1) or None) != environment:
            continue
        end = sections[i + 1].start() if i + 1 < len(sections) else len(body)
        found = _CHECKSUM.search(body, section.end(), end)
        return found.group(1) if found else EMPTY_CHECKSUM
    raise StalePlanError(f"the plan comment on #{pull.number} has no plan for environment {environment or '(none)'}")


class ReviewedPull:
    """The merged pull request an apply runs for: its reviewed checksum, and the comments the apply leaves there."""

    def __init__(self, github: GitHub, pull: PullRequest, checksum: str, label: str, sha: str):
        self.github, self.pull, self.checksum = github, pull, checksum
        self.label, self.sha = label, sha

    @classmethod
    def find(cls, sha: str, environment: str | None, label: str) -> ReviewedPull | None:
        github = GitHub.from_environment()
        pull = github.merged_pull(sha) if sha else None
        if pull is None:
            github.close()
            return None
        try:
            checksum = reviewed_checksum(pull, github.comments(pull.number), environment)
        except StalePlanError as exc:
            github.comment(pull.number, _refusal(label, exc))
            github.close()
            raise
        return cls(github, pull, checksum, label, sha)

    def refused(self, exc: Exception) -> None:
        self.github.comment(self.pull.number, _refusal(self.label, exc))

    def report(self, body: str) -> None:
        """body: the results in markdown (render.apply_report), marked as this tool's."""
        self.github.comment(self.pull.number, f"{RESULT_MARKER}\n{body}")

    def close(self) -> None:
        self.github.close()


def _refusal(label: str, exc: Exception) -> str:
    """The comment on the merged pull request when apply refuses: why, and how to apply after all."""
    return (f"{RESULT_MARKER}\n### litellm-roster apply for {label}: refused\n\n{exc}\n\nNothing was changed. To "
            "apply today's plan, review it and run the roster-apply workflow by hand with its checksum.\n")
