"""A fake GitHub REST endpoint on 127.0.0.1: the routes the workflows and `apply --github` use, with the
workflow's token required on each."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        self.protected = False  # classic branch protection on main
        self.rules: list[dict] = []  # the rulesets' rules that apply to main
        self.artifacts: list[tuple[str, str, bytes]] = []  # (name, head branch of its run, zip), newest first
        self.unauthorized = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body, kind: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
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
                if path == f"/repos/{REPO}/actions/artifacts":
                    name = dict(p.split("=") for p in query.split("&"))["name"]
                    return self._send(200, {"artifacts": [
                        {"id": i, "name": n, "expired": False, "workflow_run": {"head_branch": branch},
                         "archive_download_url": f"{fake.url}/repos/{REPO}/actions/artifacts/{i}/zip"}
                        for i, (n, branch, _) in enumerate(fake.artifacts) if n == name]})
                if m := re.fullmatch(rf"/repos/{REPO}/actions/artifacts/(\d+)/zip", path):
                    return self._send(200, fake.artifacts[int(m[1])][2], "application/zip")
                if path == f"/repos/{REPO}/branches/main":
                    return self._send(200, {"name": "main", "protected": fake.protected})
                if path == f"/repos/{REPO}/rules/branches/main":
                    return self._send(200, fake.rules)
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

