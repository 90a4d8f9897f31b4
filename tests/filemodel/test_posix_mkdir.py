"""mkdir(2), mkfifo(3), mknod(2): native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os
import stat

from posixsweep import (KINDS, NOBODY, OTHER, Sweep, check, make, mkfile, parametrize,  # noqa: F401
                        sides)

MAKERS = {
    "mkdir": lambda mode: (lambda p: os.mkdir(p, mode)),
    "mkfifo": lambda mode: (lambda p: os.mkfifo(p, mode)),
    "mknod-reg": lambda mode: (lambda p: os.mknod(p, stat.S_IFREG | mode)),
    "mknod-fifo": lambda mode: (lambda p: os.mknod(p, stat.S_IFIFO | mode)),
    "mknod-chr": lambda mode: (lambda p: os.mknod(p, stat.S_IFCHR | mode, os.makedev(13, 45))),
    "mknod-blk": lambda mode: (lambda p: os.mknod(p, stat.S_IFBLK | mode, os.makedev(4095, 1048575))),
    "mknod-sock": lambda mode: (lambda p: os.mknod(p, stat.S_IFSOCK | mode)),
    "open-creat": lambda mode: (lambda p: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))),
    "symlink": lambda mode: (lambda p: os.symlink("t", p)),
}
STAT = ("type", "mode", "uid", "gid", "nlink", "size", "rdev")


def make_modes_owner_and_parent_times(s: Sweep) -> None:
    old = os.umask(0)
    try:
        for name, maker in MAKERS.items():
            for mode in (0o755, 0o151, 0o7777):
                n = f"{name}-{mode:o}"
                snap = s.times("")
                s.do(f"{n}", maker(mode), n)
                s.stat(f"stat {n}", n, STAT)
                s.changed(f"parent times {n}", snap)
                now = os.lstat(s.p(n))
                s.value(f"new times equal {n}", now.st_mtime_ns == now.st_ctime_ns)
        os.umask(0o077)
        for name, maker in MAKERS.items():
            s.do(f"{name} umask 077", maker(0o777), name)
            s.stat(f"stat {name} umask 077", name, ("mode",))
    finally:
        os.umask(old)


def make_as_other_user(s: Sweep) -> None:
    s.quiet(lambda p: os.chmod(p, 0o777), "")
    s.quiet(lambda p: os.mkdir(p, 0o755), "ro")
    s.quiet(lambda p: os.mkdir(p, 0o777), "sgid")
    s.quiet(lambda p: os.chown(p, 0, OTHER), "sgid")
    s.quiet(lambda p: os.chmod(p, 0o2777), "sgid")
    for name, maker in MAKERS.items():
        if "chr" in name or "blk" in name:
            s.do(f"{name} as nobody EPERM", maker(0o644), name, uid=NOBODY)
            continue
        s.do(f"{name} as nobody", maker(0o755), name, uid=NOBODY, gid=NOBODY)
        s.stat(f"stat {name}", name, STAT)
        s.do(f"{name} in unwritable dir", maker(0o755), "ro/" + name, uid=NOBODY, gid=NOBODY)
        # a set-group-id directory hands its group (and, to directories, the bit) down
        s.do(f"{name} in setgid dir", maker(0o755), "sgid/" + name, uid=NOBODY, gid=NOBODY)
        s.stat(f"stat setgid/{name}", "sgid/" + name, STAT)
        s.do(f"{name} g+s in setgid dir, not in its group", maker(0o2755), "sgid/g-" + name,
             uid=NOBODY, gid=NOBODY)
        s.stat(f"stat setgid/g-{name}", "sgid/g-" + name, STAT)
        s.do(f"{name} g+s in setgid dir, in its group", maker(0o2755), "sgid/m-" + name,
             uid=NOBODY, gid=NOBODY, groups=(OTHER,))
        s.stat(f"stat setgid/m-{name}", "sgid/m-" + name, STAT)
    s.quiet(lambda p: os.mkdir(p), "sgid/sub")
    s.do("mkdir in a subdir that inherited", make("dir", 0o700), "sgid/sub/x", uid=NOBODY)
    s.stat("stat sgid/sub/x", "sgid/sub/x", STAT)
    s.quiet(lambda p: os.chmod(p, 0o777), "sgid")
    s.do("create after chmod g-s", make("reg"), "sgid/after", uid=NOBODY, gid=NOBODY)
    s.stat("stat sgid/after", "sgid/after", STAT)


def make_errors(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.mkdir(p, 0o700), "private")
    s.quiet(lambda p: os.symlink("loop2", p), "loop1")
    s.quiet(lambda p: os.symlink("loop1", p), "loop2")
    for kind in KINDS:
        s.quiet(make(kind), "e-" + kind)
    for name, maker in MAKERS.items():
        mk = maker(0o755)
        for kind in KINDS:
            s.do(f"{name} EEXIST {kind}", mk, "e-" + kind)
        s.do(f"{name} ENOTDIR", mk, "f/x")
        s.do(f"{name} ENOENT", mk, "none/x")
        s.do(f"{name} ELOOP", mk, "loop1/x")
        s.do(f"{name} ENAMETOOLONG", mk, "x" * 256)
        s.do(f"{name} EACCES search", mk, "private/x", uid=NOBODY)
        s.do(f"{name} over dangling symlink", mk, "loop1")
    s.do("mknod bad type EINVAL", lambda p: os.mknod(p, 0o170000 | 0o644), "bad")
    s.do("mkdir trailing slash", lambda p: os.mkdir(p + "/"), "slash")
    s.stat("trailing slash made", "slash")


def dir_nlink(s: Sweep) -> None:
    # 2 + one per subdirectory on ext4/tmpfs; r2fs reports 1 (docs/semantics.md)
    s.quiet(os.mkdir, "d")
    s.stat("empty dir", "d", ("dir_nlink",))
    for i in range(3):
        s.quiet(os.mkdir, f"d/sub{i}")
    s.quiet(mkfile, "d/file")
    s.stat("dir with 3 subdirs", "d", ("dir_nlink",))


def mkdir_times_of_new_dir(s: Sweep) -> None:
    s.quiet(os.mkdir, "d")
    snap = s.times("d")
    s.do("mkdir inside", os.mkdir, "d/e")
    s.changed("parent after mkdir", snap)
    snap = s.times("d", "d/e")
    s.do("rmdir inside", os.rmdir, "d/e")
    s.changed("parent after rmdir", {"d": snap["d"]})


CASES = [make_modes_owner_and_parent_times, make_as_other_user, make_errors,
         (dir_nlink, {"dir with 3 subdirs": "r2fs reports st_nlink 1 for directories",
                      "empty dir": "r2fs reports st_nlink 1 for directories"}),
         mkdir_times_of_new_dir]


@parametrize(CASES)
def test_make(sides, case, known):
    check(sides, case, known)
