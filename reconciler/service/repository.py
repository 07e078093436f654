"""reconcile init: a roster repository that holds only its own files (the roster, keys/, the audit trail and three
short workflows calling the tool's reusable workflows, pinned to one commit of the tool)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from ..core.roster import schema_text
from ..errors import ConfigError

WORKFLOWS = ("roster-plan.yml", "roster-apply.yml", "roster-drift.yml")
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
COMMIT = re.compile(r"[0-9a-f]{40}")


def _template(name: str) -> str:
    return resources.files("reconciler").joinpath("scaffold", name).read_text("utf-8")


def scaffold(tool_repository: str, ref: str) -> dict[str, str]:
    """Every file of a new roster repository, by path, pinned to that commit of the tool."""
    if not REPOSITORY.fullmatch(tool_repository):
        raise ConfigError(f"--tool-repo {tool_repository!r} is not OWNER/NAME, such as litellm-roster/litellm-roster")
    if not COMMIT.fullmatch(ref):
        raise ConfigError(f"--ref {ref!r} is not a full commit SHA: pin the tool to a commit, never a branch or tag "
                          f"(git ls-remote https://github.com/{tool_repository} main)")

    def pinned(text: str) -> str:
        return text.replace("TOOL_REPOSITORY", tool_repository).replace("TOOL_REF", ref)

    files = {"roster.yaml": _template("roster.yaml"), "roster.schema.json": schema_text(),
             ".gitignore": _template("gitignore"), "README.md": pinned(_template("README.md")),
             "keys/.gitkeep": ""}
    files.update({f".github/workflows/{name}": pinned(_template(name)) for name in WORKFLOWS})
    return files


def init(directory: Path, tool_repository: str, ref: str, *, overwrite: bool = False) -> list[str]:
    """Write the scaffold; never over an existing file unless asked. Returns the paths written."""
    files = scaffold(tool_repository, ref)
    existing = [path for path in files if (directory / path).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{directory} already has {', '.join(existing)}; pass --overwrite to replace them, or "
                          "choose an empty directory")
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    return sorted(files)
