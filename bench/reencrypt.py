"""Re-encrypting key files to an added admin recipient (RECONCILE_REENCRYPT), same keys: the whole apply, timed.

    python bench/reencrypt.py [--keys 100]

Creates N keys on the bundled sandbox (in this process), adds an admin recipient to the roster, and times
`reconcile apply` re-encrypting every key file (a sops decrypt and encrypt per file, eight at a time), plan included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "sandbox")]

import pyrage  # noqa: E402
import yaml  # noqa: E402
from helpers import MASTER, Person, Workspace  # noqa: E402

from litellm_roster_sandbox import start_sandbox  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-reencrypt-"))
    people = {}
    for name in ["admin", "admin2"] + [f"dev{i:04d}" for i in range(args.keys)]:
        identity = pyrage.x25519.Identity.generate()
        (root / f"{name}.txt").write_text(f"{identity}\n")
        people[name] = Person(name, str(identity.to_public()), root / f"{name}.txt")
    with start_sandbox(master_key=MASTER) as sandbox:
        ws = Workspace(root / "roster", sandbox.url, people)
        ws.root.mkdir()
        ws.write_roster([{"name": f"dev{i:04d}"} for i in range(args.keys)])
        assert ws.run("apply", "--force").rc == 0
        doc = yaml.safe_load(ws.roster.read_text())
        doc["keys"]["admin_recipients"].append(people["admin2"].recipient)
        ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
        env = ws.env(RECONCILE_REENCRYPT="1", SOPS_AGE_KEY_FILE=str(people["admin"].identity_file))
        start = time.perf_counter()
        done = ws.run("apply", "--force", env=env)
        elapsed = time.perf_counter() - start
    assert done.rc == 0 and f"Apply complete: {args.keys} done" in done.stdout, done.stdout[-500:]
    print(f"re-encrypted {args.keys} key files (same keys) in {elapsed:.2f} s, plan and start-up included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
