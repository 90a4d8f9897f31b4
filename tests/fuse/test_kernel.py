"""What r2fs's own FUSE loop negotiates with the kernel, seen through a real mount.

HANDLE_KILLPRIV_V2 makes clearing set-id bits the filesystem's job: a
non-owner's write or truncate, and chown, must leave exactly the mode a
native file would have. Negative entries are cached (by the kernel and the
mount) and must give way when another writer creates the name.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from fusehelp import BUCKET, Mount, make_cluster

from r2fs.cli.fuse_cmds import log_file

NOBODY = 65534


def as_nobody(*cmd: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture
def shared_mount(tmp_path):
    """A mount other users can reach (allow_other, world-traversable mount point)."""
    base = tempfile.mkdtemp(prefix="r2fs-kernel-", dir="/tmp")
    os.chmod(base, 0o755)
    native = os.path.join(base, "native")
    os.mkdir(native)
    os.chmod(native, 0o777)
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    cluster = str(tmp_path / "cluster")
    make_cluster(cluster)
    m = Mount(cluster, BUCKET, mnt, "allow_other")
    try:
        m.start()
        os.chmod(mnt, 0o777)
        yield m, native
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv (runs writes as another user)")
def test_set_id_bits_cleared_as_the_kernel_would(shared_mount):
    m, native = shared_mount

    def modes(action) -> tuple[int, int]:
        out = []
        for root in (native, m.path):
            p = os.path.join(root, f"f-{action.__name__}")
            with open(p, "wb") as f:
                f.write(b"0123456789")
            os.chmod(p, 0o6777)  # setuid, setgid + group-exec, world-writable
            action(p)
            out.append(stat.S_IMODE(os.stat(p).st_mode))
        return out[0], out[1]

    def append_by_other(p: str) -> None:
        as_nobody("sh", "-c", f"printf x >> {p}")

    def truncate_by_other(p: str) -> None:
        as_nobody("truncate", "-s", "3", p)

    def open_trunc_by_other(p: str) -> None:
        as_nobody("sh", "-c", f": > {p}")

    def chown_by_root(p: str) -> None:
        os.chown(p, NOBODY, NOBODY)

    def write_by_root(p: str) -> None:  # (CAP_FSETID: the bits stay)
        with open(p, "ab") as f:
            f.write(b"y")

    for action in (append_by_other, truncate_by_other, open_trunc_by_other, chown_by_root,
                   write_by_root):
        want, got = modes(action)
        assert got == want, (action.__name__, oct(got), oct(want))
    assert modes(append_by_other)[1] == 0o777  # (what the kernel does here, spelled out)
    # and the cleared mode is what the bucket keeps
    time.sleep(0.5)
    info = m.api(lambda b: b.head("f-append_by_other"))
    assert int(info.custom_metadata["mode"]) & 0o7777 == 0o777


def test_negative_entries_give_way_to_other_writers(mnt):
    os.mkdir(mnt.p("d"))  # made here: its listing is known, misses are answered from memory
    for name in ("absent", "d/absent"):
        assert not os.path.exists(mnt.p(name))
    mnt.api(lambda b: b.put("absent", b"top"))
    mnt.api(lambda b: b.put("d/absent", b"below"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (os.path.exists(mnt.p("absent"))
                                               and os.path.exists(mnt.p("d/absent"))):
        time.sleep(0.1)
    with open(mnt.p("absent"), "rb") as f:
        assert f.read() == b"top"
    with open(mnt.p("d/absent"), "rb") as f:
        assert f.read() == b"below"
    assert sorted(os.listdir(mnt.p("d"))) == ["absent"]



def test_a_directory_of_thousands_of_short_names_lists_whole(mnt):
    """A readdir reply is one part per entry; the kernel (6.18) asks for buffers that
    hold more than writev's 1,024 buffers: such a reply was refused with EINVAL and
    the caller (ls) waited forever. Short names make the most entries per reply."""
    d = mnt.p("many")
    os.mkdir(d)
    names = [f"{i:x}" for i in range(3000)]
    for name in names:
        os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY, 0o644))
    out = subprocess.run(["ls", "-f", d], capture_output=True, text=True, timeout=60, check=True)
    assert sorted(set(out.stdout.split()) - {".", ".."}) == sorted(names)
    assert sorted(os.listdir(d)) == sorted(names)
    with os.scandir(d) as it:
        assert sum(1 for _ in it) == len(names)


def test_a_working_directory_survives_changes_from_elsewhere_below_it(mnt):
    """A foreign change under a directory must not unhash the directories on its way:
    a process working there (git, a shell) would get ENOENT from getcwd."""
    os.makedirs(mnt.p("d", "e"))
    child = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.readline(); print(os.getcwd())"],
                             cwd=mnt.p("d", "e"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        mnt.api(lambda b: b.put("d/e/new", b"from elsewhere"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not os.path.exists(mnt.p("d", "e", "new")):
            time.sleep(0.1)
        assert os.path.exists(mnt.p("d", "e", "new"))
        time.sleep(1.5)  # the change poller has certainly run
        out, err = child.communicate("go\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() == mnt.p("d", "e")


def test_the_request_thread_and_trio_stay_synchronised(mnt):
    """The state lock's trio instrument stays installed: its first release is balanced."""
    with open(mnt.p("f"), "wb") as f:
        f.write(b"x")
    with open(log_file(mnt.path)) as f:
        log = f.read()
    assert "Instrument has been disabled" not in log and "release unlocked lock" not in log, log

FUSERMOUNT_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
import trio
from nullfs import NullFS
from r2fs.fuse.kernel import mounting
from r2fs.fuse.kernel.session import Session, StateLock
mp = sys.argv[1]
m = mounting.mount_with_fusermount(mp, mounting.parse({"default_permissions", "subtype=r2fstest"}))
s = Session(m.fd, NullFS(), StateLock())
async def main():
    async with trio.open_nursery() as n:
        s.start(n)
        def work():
            with open(os.path.join(mp, "x"), "w") as f:
                f.write("through fusermount3")
            with open(os.path.join(mp, "x")) as f:
                print(f.read(), flush=True)
        await trio.to_thread.run_sync(work)
        n.cancel_scope.cancel()
trio.run(main)
os._exit(0)  # like a killed daemon: nothing unmounts but fusermount3's auto_unmount
"""


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.mark.skipif(shutil.which("fusermount3") is None, reason="needs fusermount3")
def test_fusermount3_mount_and_auto_unmount(tmp_path):
    """The unprivileged path: fd passed back over _FUSE_COMMFD; a dead daemon leaves no mount."""
    import sys
    mp = tmp_path / "fm"
    mp.mkdir()
    tools = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
    try:
        proc = subprocess.run([sys.executable, "-c", FUSERMOUNT_CHILD, str(mp), tools],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "through fusermount3"
        deadline = time.monotonic() + 10
        while _mounted(str(mp)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _mounted(str(mp))
    finally:
        if _mounted(str(mp)):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
