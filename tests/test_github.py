"""apply --github, against a fake GitHub REST endpoint on 127.0.0.1: the plan reviewed on the merged pull request is
the plan applied (a stale one is refused, on the pull request too), and the results go back to it with a mention
of each developer whose key is ready; no key and no token in anything posted."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.adapters.github import BOT, PLAN_MARKER

TOKEN = "ghs_fake-token-0123456789abcdefghij"
REPO = "acme/roster"
MERGE, HEAD = "a" * 40, "b" * 40


class FakeGitHub:
    def __init__(self) -> None:
        self.pulls: dict[str, list[dict]] = {MERGE: [{"number": 7, "merged_at": "2026-12-07T10:00:00Z",
                                                      "merge_commit_sha": MERGE, "head": {"sha": HEAD}}]}
        self.comments: dict[int, list[dict]] = {7: []}
        self.posted: list[str] = []
        self.unauthorized = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    fake.unauthorized += 1
                    self._send(401, {"message": "Bad credentials"})
                    return False
                return True

            def do_GET(self):  # noqa: N802
                if not self._authorized():
                    return
                path, _, query = self.path.partition("?")
                if m := re.fullmatch(rf"/repos/{REPO}/commits/(\w+)/pulls", path):
                    return self._send(200, fake.pulls.get(m[1], []))
                if m := re.fullmatch(rf"/repos/{REPO}/issues/(\d+)/comments", path):
                    page = int(dict(p.split("=") for p in query.split("&")).get("page", 1))
                    return self._send(200, fake.comments.get(int(m[1]), [])[(page - 1) * 100:page * 100])
                self._send(404, {"message": "Not Found"})

            def do_POST(self):  # noqa: N802
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
                m = re.fullmatch(rf"/repos/{REPO}/issues/(\d+)/comments", self.path)
                fake.comments.setdefault(int(m[1]), []).append({"user": {"login": BOT}, "body": body})
                fake.posted.append(body)
                self._send(201, {"id": len(fake.posted)})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def review(self, plan_markdown: str, *, login: str = BOT, head: str = HEAD) -> None:
        """The sticky plan comment, as reusable-plan.yml writes it."""
        self.comments[7].append({"user": {"login": login}, "body": f"{PLAN_MARKER}\n{plan_markdown}\n"
                                                                  f"_For {head[:12]}, [run 1](https://x)._\n"})


@pytest.fixture
def github():
    fake = FakeGitHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def on_merge(ws, github, sha: str = MERGE) -> dict[str, str]:
    return ws.env(GITHUB_API_URL=github.url, GITHUB_REPOSITORY=REPO, GITHUB_SHA=sha, GITHUB_TOKEN=TOKEN)


def test_the_reviewed_plan_is_applied_and_the_results_go_back(workspace, sandbox, github):
    ws = workspace
    ws.write_roster([{"name": "jane", "github": "jane-gh"}])
    github.review(ws.run("plan", "--format", "markdown").stdout)
    forged = ws.run("plan", "--format", "markdown").stdout.replace("Checksum: `", "Checksum: `0")[:-1]
    github.review(forged, login="mallory")  # anyone can comment: only the workflow's own comments count
    applied = ws.run("apply", "--github", env=on_merge(ws, github))
    assert applied.rc == 0, applied.stdout + applied.stderr
    (report,) = github.posted
    assert "**2 done, 0 failed.**" in report and "| `+` | jane | create | ok |" in report
    assert "- @jane-gh: `reconcile key jane`" in report
    secret = ws.decrypt("jane")
    assert secret not in report and TOKEN not in applied.stdout + applied.stderr and github.unauthorized == 0


def test_a_plan_that_moved_since_review_is_refused_on_the_pull_request(workspace, sandbox, github):
    ws = workspace
    ws.write_roster([{"name": "jane"}])
    github.review(ws.run("plan", "--format", "markdown").stdout)
    ws.write_roster([{"name": "jane"}, {"name": "john"}])  # merged without a new plan
    refused = ws.run("apply", "--github", env=on_merge(ws, github))
    assert refused.rc == 3 and "changed since review" in refused.stderr, refused.stdout + refused.stderr
    (comment,) = github.posted
    assert ": refused" in comment and "changed since review" in comment and "Nothing was changed" in comment
    assert not ws.keys.exists() or not list(ws.keys.glob("*.sops.yaml"))


def test_no_plan_for_the_merged_head_means_nothing_is_applied(workspace, sandbox, github):
    ws = workspace
    ws.write_roster([{"name": "jane"}])
    github.review(ws.run("plan", "--format", "markdown").stdout, head="c" * 40)  # an earlier commit's plan
    refused = ws.run("apply", "--github", env=on_merge(ws, github))
    assert refused.rc == 3 and "is not for its last commit" in refused.stderr
    assert "is not for its last commit" in github.posted[0]
    # A run with no merged pull request (a schedule): applied under the brakes as before.
    scheduled = ws.run("apply", "--github", env=on_merge(ws, github, sha="d" * 40))
    assert scheduled.rc == 0 and "jane: create" in scheduled.stdout and len(github.posted) == 1
