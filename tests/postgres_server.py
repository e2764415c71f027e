"""Start a throwaway PostgreSQL cluster on a free loopback port, stop it by PID.

``initdb`` and ``postgres`` refuse to run as root, and CI runs the tests as root: there the
cluster runs as the ``postgres`` system user, in a data directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg

# Django 5.2 supports PostgreSQL 14 and newer.
MIN_VERSION = 14
SUPERUSER = "postgres"
# The system user that runs the cluster when the tests run as root (the Debian package creates it).
SERVICE_USER = "postgres"


def server_version(bindir: Path) -> int:
    """The major version of ``bindir/postgres`` ("postgres (PostgreSQL) 15.18 (Debian ...)")."""
    out = subprocess.run(
        [bindir / "postgres", "--version"], capture_output=True, text=True, check=True
    )
    match = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
    if match is None:
        raise RuntimeError(f"Cannot read the version of {bindir / 'postgres'}: {out.stdout!r}")
    return int(match.group(1))


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps it off PATH)."""
    candidates = {Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")}
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.add(Path(on_path).resolve().parent)
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin nor on PATH): "
            "run `apt-get install postgresql` (./dev test does this for you)."
        )
    bindir = max(candidates, key=server_version)
    version = server_version(bindir)
    if version < MIN_VERSION:
        raise RuntimeError(f"PostgreSQL {version} is too old; Django 5.2 needs {MIN_VERSION}+.")
    return bindir


@dataclass(frozen=True)
class Account:
    """Whom the server runs as, in Popen's terms; all None: the user running the tests."""

    user: int | None = None
    group: int | None = None
    extra_groups: tuple[int, ...] | None = None


def server_account() -> Account:
    """SERVICE_USER's account when the tests run as root; else the current one.

    Popen switches user in the child before exec, so the process it reports is the server
    itself and can be stopped by PID (``runuser`` would put a parent process in between).
    """
    if os.geteuid() != 0:
        return Account()
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise RuntimeError(
            f"The tests run as root, and PostgreSQL refuses root, but there is no {SERVICE_USER!r} "
            "user to run it as: `apt-get install postgresql` creates one, or run as another user."
        ) from None
    return Account(user=entry.pw_uid, group=entry.pw_gid, extra_groups=())


def make_basedir() -> Path:
    """A fresh directory the server's user owns.

    Not pytest's ``tmp_path_factory``: its base directory is private to the user running pytest
    (mode 0700), which the ``postgres`` user could not enter.
    """
    basedir = Path(tempfile.mkdtemp(prefix="elastic-sessions-postgres-"))
    account = server_account()
    if account.user is not None and account.group is not None:
        os.chown(basedir, account.user, account.group)
    return basedir


@dataclass
class PostgresServer:
    basedir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = None

    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def logfile(self) -> Path:
        return self.basedir / "postgres.log"

    def django_database(self, name: str = "elastic_sessions") -> dict[str, Any]:
        """A ``DATABASES`` entry for this server; pytest-django creates ``test_<name>`` in it."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": SUPERUSER,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """An admin connection that bypasses Django (for inspecting what it stored)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            connect_timeout=2,
            autocommit=True,
        )

    def initdb(self, bindir: Path) -> None:
        account = server_account()
        # Trust authentication: the server listens on loopback only and lives for one test run.
        # No fsync, here and below: a crash loses nothing the next run needs.
        args = [
            bindir / "initdb",
            "--pgdata", str(self.datadir),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        result = subprocess.run(
            args,
            cwd=self.basedir,
            capture_output=True,
            text=True,
            check=False,
            user=account.user,
            group=account.group,
            extra_groups=account.extra_groups,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresServer:
        bindir = postgres_bindir()
        if not (self.datadir / "PG_VERSION").exists():
            self.initdb(bindir)
        account = server_account()
        self._log = self.logfile.open("a")
        args = [
            bindir / "postgres",
            "-D", str(self.datadir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            # No unix socket: Debian's default directory is not writable by every user.
            "-c", "unix_socket_directories=",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            cwd=self.basedir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=account.user,
            group=account.group,
            extra_groups=account.extra_groups,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not answer within 30 s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            self.connect().close()
        except psycopg.OperationalError:
            # Refused while the port is not bound yet, or "the database system is starting up".
            return False
        return True

    def log_tail(self) -> str:
        return self.logfile.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM (smart) would wait for every client
            # to leave, including connections a failed test left open.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.basedir)
