"""A private PostgreSQL cluster for `make run` (when DATABASE_URL is unset) and the tests.

Uses the machine's PostgreSQL binaries. initdb and postgres refuse to run as root, so as
root they run as the `postgres` system user, with a data directory that user owns.
The cluster listens on 127.0.0.1 (plus any `listen_addresses` given, for app hosts in network
namespaces, trusted from `trusted_networks` only) and trusts those connections: it is for one
developer's machine or one test run, never for production.
"""
from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

# Four workers x (pool of 50 + control + Flask threads) plus tests and tools: see README.
DEFAULT_MAX_CONNECTIONS = 400
APP_ROLE = "happiness"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or they could not start."""


def find_bin_dir() -> Path:
    """The bin directory holding initdb/pg_ctl: $PG_BIN, pg_config, or Debian's layout."""
    candidates = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: int(Path(p).parent.name), reverse=True)]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise PostgresUnavailable(
        "No PostgreSQL server binaries (initdb, pg_ctl) found. Install them "
        "(as root: apt-get install postgresql), set PG_BIN to their directory, "
        "or set DATABASE_URL to an existing database.")


def _as_root() -> bool:
    return os.geteuid() == 0


def _accessible_to(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(path)],
                          capture_output=True).returncode == 0


def private_dir(preferred: Path) -> Path:
    """`preferred` if the server user can reach it; else a stable directory under /var/tmp.

    As root the server runs as `postgres`, which cannot enter a checkout under /root.
    """
    preferred.mkdir(parents=True, exist_ok=True)
    if not _as_root():
        return preferred
    shutil.chown(preferred, "postgres")
    if _accessible_to("postgres", preferred):
        return preferred
    digest = hashlib.sha1(str(preferred.resolve()).encode()).hexdigest()[:10]
    path = Path("/var/tmp") / f"happiness-pg-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class PostgresCluster:
    """initdb (once), start, create databases, stop."""

    def __init__(self, base_dir: Path, port: int, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 listen_addresses: Sequence[str] = (), trusted_networks: Sequence[str] = ()) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.port = port
        self.max_connections = max_connections
        self.listen_addresses = ["127.0.0.1", *listen_addresses]
        self.trusted_networks = list(trusted_networks)
        self.bin_dir = find_bin_dir()

    def _run(self, *args: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        cmd = list(args)
        if _as_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd="/", input=input_text)
        if check and out.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out

    def start(self) -> "PostgresCluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            uid = pwd.getpwnam("postgres").pw_uid
            os.chown(self.base_dir, uid, -1)
        os.chmod(self.base_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        self._trust_networks()
        options = (f"-p {self.port} -c listen_addresses={','.join(self.listen_addresses)} -k {self.base_dir} "
                   f"-c max_connections={self.max_connections} -c fsync=off -c full_page_writes=off "
                   # Counts executions per statement: how the tests and `make bench` prove coalescing.
                   "-c shared_preload_libraries=pg_stat_statements")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-o", options, "-w", "-t", "60", "start")
        self.ensure_role(APP_ROLE)
        return self

    def _trust_networks(self) -> None:
        """pg_hba lines for the extra networks (initdb's file trusts only local connections)."""
        if not self.trusted_networks:
            return
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        for network in self.trusted_networks:
            line = f"host all all {network} trust"
            if line not in lines:
                lines.append(line)
        self._run("tee", str(hba), input_text="\n".join(lines) + "\n")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = self._run(str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", dbname, "-v", "ON_ERROR_STOP=1", "-tAc", sql)
        return out.stdout.strip()

    def ensure_role(self, role: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):
            self.psql(f"CREATE ROLE {role} LOGIN")

    def create_database(self, name: str, owner: str = APP_ROLE, *, template: str | None = None) -> str:
        """Create `name` if missing; return its URL for the app role."""
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            tmpl = f" TEMPLATE {template}" if template else ""
            self.psql(f'CREATE DATABASE "{name}" OWNER {owner}{tmpl}')
        return self.url(name, owner)

    def url(self, dbname: str, user: str = APP_ROLE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
