"""What every r2fs benchmark does the same way (see the convention in tools/bench).

* `median_runs`: each figure is the median of N runs (3 by default), so one
  run disturbed by the other tenants of a shared machine does not decide it.
* `Table`: "metric | r2fs | native | ratio", the ratio being r2fs / native for
  throughputs (higher is better) and native / r2fs for latencies.
* `drop_caches`: reads are measured from disk, not from the page cache --
  only possible as root; otherwise the table says the cache was NOT dropped.
* `temp_cluster`: a fresh cluster in a temporary directory on the disk being
  measured, removed afterwards.
* `DataStream`: reproducible incompressible data in which no chunk repeats
  (a repeated chunk would be deduplicated and make r2fs look faster than it is),
  generated cheaply so the generator does not dominate what is measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def parse_size(text: str) -> int:
    """'4MiB', '1G', '512k', '1000' -> bytes (binary units)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in "kmgt" else t
    try:
        value = int(float(number) * mult)
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    if value < 0:
        raise ValueError(f"negative size: {text!r}")
    return value


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Decimal MB/s, as disks and `dd` report them."""
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def median_runs(fn: Callable[[int], float], runs: int = 3) -> tuple[float, list[float]]:
    """Call fn(run_index) `runs` times; (median, all results)."""
    results = [fn(i) for i in range(runs)]
    return statistics.median(results), results


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drop_caches() -> bool:
    """sync + drop the page cache (root only). True if it was dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


@dataclass
class Row:
    metric: str
    r2fs: float
    native: float | None = None
    unit: str = "MB/s"
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.native is None or not self.native or not self.r2fs:
            return None
        return self.r2fs / self.native if self.higher_is_better else self.native / self.r2fs


@dataclass
class Table:
    """A result table; `print()` it at the end, add notes for anything unusual."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, r2fs: float, native: float | None = None, unit: str = "MB/s",
            higher_is_better: bool = True) -> Row:
        row = Row(metric, r2fs, native, unit, higher_is_better)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        def num(v: float | None, unit: str) -> str:
            if v is None:
                return "-"
            return f"{v:,.1f} {unit}" if v < 100 else f"{v:,.0f} {unit}"

        lines = [[r.metric, num(r.r2fs, r.unit), num(r.native, r.unit),
                  "-" if r.ratio is None else f"{r.ratio * 100:.0f}%"] for r in self.rows]
        head = ["metric", "r2fs", "native", "ratio"]
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(4)]
        fmt = lambda cells: " | ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [self.title, fmt(head), "-+-".join("-" * w for w in widths), *map(fmt, lines)]
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def print(self) -> None:
        print(self.render(), flush=True)


def progress(text: str) -> None:
    """Progress goes to stderr so that stdout holds only the tables."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def describe_machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{os.cpu_count()} CPUs ({cpu}), load average {load}"


def filesystem_of(path: str) -> str:
    try:
        out = subprocess.run(["df", "--output=source,fstype", path], capture_output=True,
                             text=True, check=True).stdout.splitlines()[-1].split()
        return " ".join(out)
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


@contextlib.contextmanager
def temp_dir(base: str | None, prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def temp_cluster(base: str | None = None, **init_args: Any) -> Iterator[Any]:
    """A fresh `r2fs.engine.store.Cluster` (init arguments passed on), removed afterwards."""
    from r2fs.engine.store import Cluster

    with temp_dir(base, "r2fs-bench-") as path:
        cluster = Cluster.init(os.path.join(path, "cluster"), **init_args)
        try:
            yield cluster
        finally:
            cluster.close()


class DataStream:
    """`total` bytes of incompressible data, in pieces of `piece` bytes.

    A 64 MiB random pool is made once; each piece is a slice of it with a
    16-byte (stream seed, piece number) stamp at its start, so no two pieces --
    and so no two chunks of any size >= piece -- are equal, within one stream
    or across streams with different seeds. Same seed -> same bytes, so the
    native baseline writes exactly what r2fs stores.
    """

    POOL = 64 * MiB
    _pool: bytes | None = None

    def __init__(self, total: int, seed: int, piece: int = MiB) -> None:
        if piece < 16:
            raise ValueError("piece must be at least 16 bytes")
        self.total, self.seed, self.piece = total, seed, piece
        if DataStream._pool is None:
            DataStream._pool = os.urandom(self.POOL)

    def pieces(self) -> Iterator[bytes]:
        pool = DataStream._pool
        assert pool is not None
        done, n = 0, 0
        while done < self.total:
            size = min(self.piece, self.total - done)
            start = (n * 7919 * 4096) % (self.POOL - self.piece)
            stamp = (self.seed.to_bytes(8, "little") + n.to_bytes(8, "little"))[:size]
            # one copy per piece: the generator must cost little next to what is measured
            yield b"".join((stamp, memoryview(pool)[start + len(stamp):start + size]))
            done += size
            n += 1

    async def apieces(self) -> Any:
        for p in self.pieces():
            yield p


def native_write(path: str, stream: DataStream) -> float:
    """Seconds to write the stream to a plain file and fsync it (the baseline for put)."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for piece in stream.pieces():
            write_fully(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def write_fully(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is out (the plain baseline: one buffer, no writev)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def native_read(path: str, block: int = 4 * MiB) -> tuple[float, int]:
    """(seconds, bytes) to read a file sequentially (the baseline for get)."""
    start = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(block)
            if not data:
                break
            total += len(data)
    return time.perf_counter() - start, total
