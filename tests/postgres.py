"""A throwaway PostgreSQL cluster on 127.0.0.1 for LiteLLM's real proxy: made with Debian's `initdb` in a temp
directory, run as the `postgres` user when the tests run as root (PostgreSQL refuses root), stopped by PID."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bindir() -> Path | None:
    """Debian keeps the server's programs off PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    majors = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(majors[-1]).parent if majors else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One cluster, one database. `url` is what LiteLLM's DATABASE_URL gets."""

    USER, DATABASE = "litellm", "litellm"

    def __init__(self, programs: Path):
        self.bin = programs
        self.root = Path(tempfile.mkdtemp(prefix="litellm-pg-"))
        self.port = free_port()
        self.url = f"postgresql://{self.USER}@127.0.0.1:{self.port}/{self.DATABASE}"
        self.process: subprocess.Popen | None = None
        self._as = {}
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def start(self) -> Postgres:
        data = self.root / "data"
        subprocess.run([self.bin / "initdb", "-D", data, "-U", self.USER, "--auth=trust", "-E", "UTF8",
                        "--no-locale"], check=True, capture_output=True, **self._as)
        # Durability is not under test: fsync off keeps truncation and migrations fast.
        self.process = subprocess.Popen(
            [self.bin / "postgres", "-D", data, "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
             "-k", self.root, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "wb"), **self._as)
        deadline = time.monotonic() + 60
        while self.psql("postgres", "-c", "select 1", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.psql("postgres", "-c", f"CREATE DATABASE {self.DATABASE}")
        return self

    def psql(self, database: str, *args: str, stdin: str | None = None, check: bool = True):
        done = subprocess.run([self.bin / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(self.port), "-U", self.USER, "-d", database, *args],
                              input=stdin, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"psql {' '.join(args)[:80]}: {done.stderr.strip()[-2000:]}")
        return done

    def migrate(self, migrations: Path) -> int:
        """LiteLLM's own migrations in the order Prisma applies them (there is no Prisma schema engine here).
        Statement by statement, not in a transaction: some create indexes CONCURRENTLY."""
        files = sorted(migrations.glob("*/migration.sql"))
        script = "SET client_min_messages = warning;\n" + "".join(
            f"\\i '{str(f).replace(chr(39), chr(39) * 2)}'\n" for f in files)
        self.psql(self.DATABASE, "-f", "-", stdin=script)
        return len(files)

    def truncate(self) -> None:
        """Empty every LiteLLM table, as a fresh install has them."""
        self.psql(self.DATABASE, "-c", """DO $$ DECLARE names text; BEGIN
            SELECT string_agg(format('%I', tablename), ', ') INTO names FROM pg_tables
            WHERE schemaname = 'public' AND tablename <> '_prisma_migrations';
            EXECUTE 'TRUNCATE ' || names || ' RESTART IDENTITY CASCADE'; END $$""")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # smart shutdown by PID
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
