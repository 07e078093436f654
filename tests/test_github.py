"""apply --github, against a fake GitHub REST endpoint on 127.0.0.1: the plan reviewed on the merged pull request is
the plan applied (a stale one is refused, on the pull request too), and the results go back to it with a mention
of each developer whose key is ready; no key and no token in anything posted."""

from __future__ import annotations

from github_fake import MERGE, REPO, TOKEN


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


def test_a_push_the_branch_rules_would_refuse_stops_apply_before_any_change(workspace, sandbox, github):
    """--push-check: refused afterwards, the push would leave the new keys live and their files on the runner."""
    ws = workspace
    ws.write_roster([{"name": "jane"}])
    github.review(ws.run("plan", "--format", "markdown").stdout)
    github.rules = [{"type": "deletion"}, {"type": "pull_request", "parameters": {}}]
    refused = ws.run("apply", "--github", "--push-check", "main", env=on_merge(ws, github))
    assert refused.rc == 1, refused.stdout + refused.stderr
    assert "main admits no direct push from this job (pull_request)" in refused.stderr
    assert "ROSTER_PUSH_KEY" in refused.stderr and not sandbox.store.rows
    assert "main admits no direct push" in github.posted[0] and "Nothing was changed" in github.posted[0]
    github.rules, github.protected = [], True
    classic = ws.run("apply", "--push-check", "main", env=on_merge(ws, github, sha="d" * 40))
    assert classic.rc == 1 and "(branch protection)" in classic.stderr and not sandbox.store.rows
    github.rules, github.protected = [{"type": "deletion"}, {"type": "non_fast_forward"}], False
    admitted = ws.run("apply", "--github", "--push-check", "main", env=on_merge(ws, github))
    assert admitted.rc == 0 and "jane: create" in admitted.stdout, admitted.stdout + admitted.stderr
