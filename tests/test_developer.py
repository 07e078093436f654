"""reconcile key: the developer's side, with their own age or ssh-ed25519 identity and no admin credential; the
key proven on /v1/models (directly, or through a devcontainer's Host-header route) before it is written to an env
file git ignores."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from helpers import RECONCILE, host_route

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"


@pytest.fixture
def devdir(tmp_path_factory) -> Path:
    """The developer's project: a git repository ignoring .env (outside the workspace, whose files are scanned for
    secrets: this is where the key is meant to go)."""
    root = tmp_path_factory.mktemp("project")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text(".env\n")
    return root


def developer_env(ws, identity: Path | None = None, **extra: str) -> dict[str, str]:
    """No admin credential, no operator setting: only the developer's identity."""
    env = {k: v for k, v in ws.env().items() if not k.startswith(("LITELLM_", "RECONCILE_", "SOPS_"))}
    env["HOME"] = str(ws.root / ".home")  # no ~/.config/sops/age/keys.txt of this machine's
    if identity is not None:
        env["SOPS_AGE_KEY_FILE"] = str(identity)
    return {**env, **extra}


def key(ws, *args: str, env: dict[str, str]):
    done = subprocess.run([RECONCILE, "key", *args], cwd=ws.root, capture_output=True, text=True, env=env,
                          timeout=120)
    ws.outputs += [done.stdout, done.stderr]
    return done


def test_the_key_is_proven_then_written_once(workspace, people, devdir):
    ws = workspace
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    secret = ws.decrypt("jane")
    env_file = devdir / ".env"
    env_file.write_text("OTHER=1\nexport ANTHROPIC_BASE_URL=http://old.example\n# a comment\n")
    done = key(ws, "jane", "--env-file", str(env_file), env=developer_env(ws, people["jane"].identity_file))
    assert done.returncode == 0, done.stderr
    assert f"jane: key for {ws.url}: models {OPUS}, {SONNET}; expires never" in done.stdout
    assert f"wrote ANTHROPIC_AUTH_TOKEN and ANTHROPIC_BASE_URL to {env_file} (mode 0600)" in done.stdout
    assert env_file.read_text() == (f"OTHER=1\nANTHROPIC_BASE_URL={ws.url}\n# a comment\n"
                                    f"ANTHROPIC_AUTH_TOKEN={secret}\n")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    before = env_file.read_bytes()
    again = key(ws, "jane", "--env-file", str(env_file), env=developer_env(ws, people["jane"].identity_file))
    assert again.returncode == 0 and "already holds this key" in again.stdout
    assert env_file.read_bytes() == before
    assert secret not in done.stdout + done.stderr + again.stdout + again.stderr


def test_a_devcontainer_route_needs_its_host_header(workspace, people, devdir):
    ws = workspace
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    env_file = devdir / ".env"
    jane = developer_env(ws, people["jane"].identity_file)
    with host_route(ws.url, "litellm.localhost") as route:
        refused = key(ws, "jane", "--env-file", str(env_file), "--base-url", route, env=jane)
        assert refused.returncode == 1 and f"{route}/v1/models answered HTTP 404" in refused.stderr
        assert "nothing was written" in refused.stderr and not env_file.exists()
        done = key(ws, "jane", "--env-file", str(env_file), "--base-url", route, "--host-header",
                   "litellm.localhost", env=jane)
    assert done.returncode == 0, done.stderr
    assert f"ANTHROPIC_BASE_URL={route}\n" in env_file.read_text()
    offline = key(ws, "jane", "--env-file", str(env_file), "--base-url", "http://127.0.0.1:9", "--no-verify",
                  env=jane)
    assert offline.returncode == 0 and "not verified (--no-verify)" in offline.stdout


def test_every_refusal_is_one_line_and_writes_nothing(workspace, people, devdir):
    ws = workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    env_file = devdir / ".env"
    jane = developer_env(ws, people["jane"].identity_file)

    def refused(*args: str, env: dict[str, str] = jane, target: Path = env_file) -> str:
        done = key(ws, *args, "--env-file", str(target), env=env)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and not target.exists(), done.stderr
        return done.stderr

    assert "cannot decrypt keys/john.sops.yaml with your identity" in refused("john")
    assert "janet is not a developer in roster.yaml; did you mean jane?" in refused("janet")
    assert "no identity to decrypt with: set SOPS_AGE_KEY_FILE" in refused("jane", env=developer_env(ws))
    (ws.keys / "john.sops.yaml").unlink()
    assert "keys/john.sops.yaml is missing: the key is delivered by the apply job" in \
        refused("john", env=developer_env(ws, people["john"].identity_file))
    visible = devdir / "visible.env"
    assert "is not ignored by git, so the key could be committed: add 'visible.env'" in refused("jane", target=visible)
    tracked = devdir / "tracked.env"
    tracked.write_text("")
    subprocess.run(["git", "-C", str(devdir), "add", "-f", "tracked.env"], check=True)
    done = key(ws, "jane", "--env-file", str(tracked), env=jane)
    assert done.returncode == 1 and "is tracked by git" in done.stderr and tracked.read_text() == ""
    ws.write_roster([{"name": "jane", "disabled": True}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    assert "the key is blocked: the roster disables you" in refused("jane")


def test_an_ssh_ed25519_identity_works(workspace, devdir, tmp_path):
    ws = workspace
    private = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    ws.write_roster([{"name": "jane", "recipient": (tmp_path / "id_ed25519.pub").read_text().strip()}])
    assert ws.run("apply").rc == 0
    env_file = devdir / ".env"
    done = key(ws, "jane", "--env-file", str(env_file),
               env=developer_env(ws, SOPS_AGE_SSH_PRIVATE_KEY_FILE=str(private)))
    assert done.returncode == 0, done.stderr
    assert "ANTHROPIC_AUTH_TOKEN=sk-" in env_file.read_text()
