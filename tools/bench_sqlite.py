"""sqlite on the mount: autocommit inserts and random-row updates vs native and gocryptfs.

Two workloads, each on a native directory, a gocryptfs mount (a FUSE
filesystem that encrypts every block, the peer) and a fresh `r2fs mount`,
all on the disk being measured (--dir), in the same run, median of --runs:

* `--inserts` (default 200) autocommit INSERTs of a 100-byte row into an
  empty database: ms per commit;
* a database of --db-size (default 48 MiB) rows of 1 KiB, then `--updates`
  (default 200) autocommit UPDATEs of random rows: ms per commit.

sqlite runs with its defaults (rollback journal, synchronous=FULL): every
commit writes and fsyncs the journal and the database. Also printed: the
bytes the r2fs mount daemon wrote to disk (shards, metadata, staging) per
byte sqlite wrote (what the fsyncs had to make durable), and its CPU
seconds per commit. Target: ms per commit at most gocryptfs's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from typing import Iterator

from benchlib import MiB, Table, describe_machine, filesystem_of, parse_size, progress, temp_dir

ROW = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inserts", type=int, default=200, help="autocommit inserts (200)")
    parser.add_argument("--updates", type=int, default=200, help="autocommit updates (200)")
    parser.add_argument("--db-size", type=parse_size, default=48 * MiB,
                        help="database size for the updates (48MiB)")
    parser.add_argument("-o", dest="options", default=None, help="r2fs mount options")


# --- the workloads (each returns ms per commit) ------------------------------------------------


def inserts(directory: str, n: int, run: int) -> float:
    path = os.path.join(directory, f"ins{run}.db")
    db = sqlite3.connect(path, isolation_level=None)  # autocommit
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        payload = os.urandom(100)
        t = time.perf_counter()
        for i in range(n):
            db.execute("INSERT INTO t (v) VALUES (?)", (payload,))
        return (time.perf_counter() - t) * 1000 / n
    finally:
        db.close()


def make_db(directory: str, size: int, run: int) -> tuple[str, int]:
    path = os.path.join(directory, f"upd{run}.db")
    rows = size // (ROW + 64)
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        rnd = random.Random(run)
        db.executemany("INSERT INTO t (id, v) VALUES (?, ?)",
                       ((i, rnd.randbytes(ROW)) for i in range(1, rows + 1)))
        db.commit()
    finally:
        db.close()
    return path, rows


def updates(path: str, rows: int, n: int, run: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        rnd = random.Random(1000 + run)
        t = time.perf_counter()
        for _ in range(n):
            db.execute("UPDATE t SET v = ? WHERE id = ?", (rnd.randbytes(ROW), rnd.randint(1, rows)))
        ms = (time.perf_counter() - t) * 1000 / n
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return ms
    finally:
        db.close()


# --- the places --------------------------------------------------------------------------------


def _run(cmd: list[str], **kw: object) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[:400]}")


@contextlib.contextmanager
def gocryptfs(base: str) -> Iterator[str]:
    cipher, mnt = os.path.join(base, "gocrypt-cipher"), os.path.join(base, "gocrypt")
    os.makedirs(cipher)
    os.makedirs(mnt)
    _run(["gocryptfs", "-q", "-init", "-extpass", "echo bench", cipher])
    _run(["gocryptfs", "-q", "-extpass", "echo bench", cipher, mnt])
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)


@contextlib.contextmanager
def r2fs_mount(base: str, options: str | None) -> Iterator[tuple[str, int | None]]:
    from bench_mount import Mounted
    from r2fs.cli.fuse_cmds import daemon_pid
    with Mounted(base, options) as m:
        yield m.path, daemon_pid(m.path)


class DaemonIo:
    """Disk bytes written and CPU seconds of the mount daemon between two points."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def sample(self) -> tuple[int, float]:
        if self.pid is None:
            return 0, 0.0
        with open(f"/proc/{self.pid}/io") as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return int(io["write_bytes"]), cpu


def app_written() -> int:
    """Bytes this process passed to write() so far (what sqlite asked to store)."""
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])


def run(args: argparse.Namespace) -> None:
    with temp_dir(args.dir, "r2fs-bench-sqlite-") as base, contextlib.ExitStack() as stack:
        places = {"native": os.path.join(base, "native")}
        os.makedirs(places["native"])
        places["gocryptfs"] = stack.enter_context(gocryptfs(base))
        mnt, pid = stack.enter_context(r2fs_mount(base, args.options))
        places["r2fs"] = mnt
        daemon = DaemonIo(pid)
        ins: dict[str, list[float]] = {p: [] for p in places}
        upd: dict[str, list[float]] = {p: [] for p in places}
        amplification: dict[str, list[float]] = {"inserts": [], "updates": []}
        cpu: dict[str, list[float]] = {"inserts": [], "updates": []}
        for i in range(args.runs):
            for place, d in places.items():
                progress(f"{place}: {args.inserts} autocommit inserts (run {i + 1})")
                before, app = daemon.sample(), app_written()
                ins[place].append(inserts(d, args.inserts, i))
                if place == "r2fs":
                    after = daemon.sample()
                    amplification["inserts"].append((after[0] - before[0]) / max(1, app_written() - app))
                    cpu["inserts"].append((after[1] - before[1]) * 1000 / args.inserts)
                progress(f"{place}: {args.db_size // MiB} MiB database (run {i + 1})")
                path, rows = make_db(d, args.db_size, i)
                progress(f"{place}: {args.updates} autocommit updates (run {i + 1})")
                before, app = daemon.sample(), app_written()
                upd[place].append(updates(path, rows, args.updates, i))
                if place == "r2fs":
                    after = daemon.sample()
                    amplification["updates"].append((after[0] - before[0]) / max(1, app_written() - app))
                    cpu["updates"].append((after[1] - before[1]) * 1000 / args.updates)
        med = {name: {p: statistics.median(v) for p, v in fig.items()}
               for name, fig in (("inserts", ins), ("updates", upd))}
        table = Table(f"sqlite on the mount (median of {args.runs}; ms per commit; "
                      f"ratio = native/r2fs)")
        labels = {"inserts": f"{args.inserts} autocommit inserts",
                  "updates": f"{args.db_size // MiB} MiB db, {args.updates} random-row updates"}
        for name, label in labels.items():
            m = med[name]
            table.add(label, m["r2fs"], m["native"], "ms", higher_is_better=False)
            table.add(f"{label} [gocryptfs]", m["gocryptfs"], m["native"], "ms",
                      higher_is_better=False)
            table.note(f"{label}: r2fs at {m['gocryptfs'] / m['r2fs']:.2f}x gocryptfs's speed "
                       f"(target >= 1); daemon wrote "
                       f"{statistics.median(amplification[name]):.2f} disk bytes per byte sqlite "
                       f"wrote; daemon CPU {statistics.median(cpu[name]):.2f} ms per commit")
        table.note(describe_machine())
        table.note(f"disk: {filesystem_of(base)}")
        table.print()


if __name__ == "__main__":
    sys.exit("run it as: tools/bench sqlite")
