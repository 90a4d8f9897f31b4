"""Close-to-open between FUSE mounts on two hosts: one bucket mounted in each of two
network namespaces (netns.py), metadata in the shared PostgreSQL, shared node directories.

What one mount writes and closes, the other shows after at most about one poll of
its change poller (woken by PostgreSQL's NOTIFY): new names (also ones the
reader had looked up and cached as absent), new content at the next open,
unlinks, renames, new directories and their listings -- in both directions.
"""

from __future__ import annotations

import os
import time

import pytest
import trio

from netns import HostMount, needs_netns

pytestmark = needs_netns

BUCKET = "hosts"
#: What the test allows between close() on one host and the other host showing it:
#: the publisher's delay for bulk closes (0.15 s), one poll (0.25 s, woken early by
#: NOTIFY) and the invalidations, with room for a loaded 2-core machine.
BOUND = 2.0


@pytest.fixture
def mounts(tmp_path, net, shared):
    control, dirs = shared
    trio.run(control.create_bucket, BUCKET)
    made: list[HostMount] = []
    try:
        for i, d in enumerate(dirs):
            path = tmp_path / f"mnt{i + 1}"
            path.mkdir()
            m = HostMount(net.hosts[i], d, BUCKET, str(path))
            made.append(m)
            m.start()
        yield made
    finally:
        for m in made:
            m.stop()


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def content(path: str) -> bytes | None:
    """What a fresh open() reads, or None if the name is absent."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def listing(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


def seen_within(what: str, cond, timeout: float = 10.0) -> float:
    """Seconds until `cond()` held, asking again and again (as a user would); fails after
    `timeout` naming `what`."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not seen after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
def test_writes_through_one_hosts_mount_reach_the_other_hosts_mount(mounts, direction):
    w, r = mounts if direction == "1->2" else mounts[::-1]
    delays: dict[str, float] = {}

    write(w.p("new"), b"one")  # a name the reader never looked up
    delays["new file"] = seen_within("new file", lambda: content(r.p("new")) == b"one")

    assert content(r.p("later")) is None  # now cached as absent (kernel and mount)
    assert listing(r.path) == ["new"]  # and the root listed: complete, "later" not in it
    write(w.p("later"), b"two")
    delays["negative entry"] = seen_within("a name cached as absent",
                                           lambda: content(r.p("later")) == b"two")

    assert content(r.p("new")) == b"one"  # in the reader's page cache now
    write(w.p("new"), b"changed, and longer")
    delays["overwrite"] = seen_within("new content after close->open",
                                      lambda: content(r.p("new")) == b"changed, and longer")
    assert os.stat(r.p("new")).st_size == len(b"changed, and longer")

    os.unlink(w.p("later"))
    delays["unlink"] = seen_within("unlink", lambda: content(r.p("later")) is None)

    os.rename(w.p("new"), w.p("renamed"))
    delays["rename"] = seen_within("rename", lambda: content(r.p("new")) is None
                                   and content(r.p("renamed")) == b"changed, and longer")

    os.mkdir(w.p("d"))
    delays["mkdir"] = seen_within("mkdir", lambda: listing(r.p("d")) == [])  # listed: complete
    os.mkdir(w.p("d", "sub"))
    write(w.p("d", "sub", "f"), b"deep")
    write(w.p("d", "g"), b"g")
    delays["listing"] = seen_within("entries of a listed directory", lambda: (
        listing(r.p("d")) == ["g", "sub"] and listing(r.p("d", "sub")) == ["f"]))

    os.rename(w.p("d"), w.p("e"))
    delays["directory rename"] = seen_within("directory rename", lambda: (
        listing(r.p("d")) is None and listing(r.p("e")) == ["g", "sub"]
        and content(r.p("e", "sub", "f")) == b"deep"))

    for p in ("e/sub/f", "e/g"):
        os.unlink(w.p(p))
    os.rmdir(w.p("e", "sub"))
    os.rmdir(w.p("e"))
    delays["rmdir"] = seen_within("rmdir", lambda: listing(r.path) == ["renamed"])

    print(direction, {k: round(v, 3) for k, v in delays.items()})
    assert max(delays.values()) <= BOUND, delays
