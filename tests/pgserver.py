"""A throwaway PostgreSQL server for tests and benchmarks (Debian's postgresql-15).

`PgServer` runs `initdb` into a temp directory as the `postgres` user (when
run as root, as CI is), starts the server on a free loopback port (or the
addresses given) with fsync off, and hands out one fresh database per test,
created from a template. `stop()`/`start()` let a test take the server down
mid-workload (`stop(mode="immediate")` is a crash) and bring it back on the
same data. Always used under try/finally (or a fixture), so nothing is left
running.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TEMPLATE = "r2fs_template"


def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, *, listen: str = "127.0.0.1", netns: str | None = None,
                 settings: dict[str, str] | None = None, fsync: bool = False) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.listen = listen
        self.netns = netns
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="r2fs-pg-")
        self.data = os.path.join(self.dir, "data")
        self.proc: subprocess.Popen | None = None
        self._n = itertools.count()
        self._as_postgres = os.geteuid() == 0
        self.settings = {"fsync": "on" if fsync else "off", "full_page_writes": "off",
                         "synchronous_commit": "on", "max_connections": "400",
                         "shared_buffers": "128MB", "max_pred_locks_per_transaction": "256",
                         **(settings or {})}
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(bindir, "initdb"), "-D", self.data, "-A", "trust", "-U",
                   "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        if listen != "127.0.0.1":  # addresses inside the test's own namespaces: let them in
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
                for addr in listen.split(","):
                    f.write(f"host all all {addr.strip()}/24 trust\n")
        self.start()
        self.sql(f"CREATE DATABASE {TEMPLATE}")

    def _cmd(self, argv: list[str]) -> list[str]:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        return argv

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._cmd(argv), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self) -> None:
        args = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
                "-c", f"listen_addresses={self.listen}", "-c", f"unix_socket_directories={self.dir}"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(self._cmd(args), stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(self._cmd([os.path.join(self.bindir, "pg_isready"), "-q", "-h",
                                          self.dir, "-p", str(self.port)]), check=False)
            if r.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start: " + self.log_tail())

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean) or "immediate" (no checkpoint: a crash)."""
        if self.proc is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(self.socket_url(db), autocommit=True) as conn:
            conn.execute(statement)

    def socket_url(self, db: str) -> str:
        """The database over the server's unix socket (reachable from any network namespace)."""
        return f"postgresql://postgres@/{db}?host={self.dir}&port={self.port}"

    def url(self, db: str, host: str | None = None) -> str:
        return f"postgresql://postgres@{host or self.listen.split(',')[0]}:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh empty database (from the template); its URL."""
        name = f"t{os.getpid()}_{next(self._n)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
