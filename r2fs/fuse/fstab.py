"""`mount.fuse.r2fs`: the helper mount(8) runs for `fuse.r2fs` lines in /etc/fstab.

    demo  /mnt/demo  fuse.r2fs  cluster=/var/lib/r2fs,attr_timeout=2,_netdev  0  0

mount(8) calls `mount.fuse.r2fs SOURCE MOUNTPOINT [-n] [-s] [-f] [-v]
[-N NAMESPACE] [-o OPTIONS] [-t fuse.r2fs]`. SOURCE is the bucket;
`cluster=DIR`, `cache_dir=DIR`, `write_mode=sync|local` and `region=NAME` are
taken out of OPTIONS, options meant for mount(8) and systemd alone (`x-*`,
`comment=`, `users`, `owner`, `group`) are dropped, and the rest are mount
options as for `r2fs mount -o`. It then runs `r2fs mount` (background) with
the same Python it runs under -- never whatever `r2fs` PATH finds, which at
boot or under sudo is usually nothing -- so it returns once the mount
answers, as mount(8) expects.

`make install` links it as /sbin/mount.fuse.r2fs, where mount(8) looks.
"""

from __future__ import annotations

import subprocess
import sys

#: fstab option -> `r2fs mount` flag
_FLAGS = {"cluster": "--cluster", "cache_dir": "--cache-dir", "write_mode": "--write-mode",
          "region": "--region"}
#: fstab options for mount(8) itself, not for the file system
_FSTAB_ONLY = ("comment", "users", "owner", "group")


def command(argv: list[str]) -> list[str] | None:
    """The `r2fs` command line for the helper's arguments (None: -f, fake mount)."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options += next(args, "").split(",")
        elif arg.startswith("-o"):
            options += arg[2:].split(",")
        elif arg == "-f":
            fake = True
        elif arg in ("-n", "-s", "-v"):
            continue
        elif arg in ("-t", "-N"):  # the type (fuse.r2fs: us), a namespace to mount in
            next(args, None)
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise SystemExit("usage: mount.fuse.r2fs BUCKET MOUNTPOINT [-o cluster=DIR,OPTIONS]")
    if fake:
        return None
    front: list[str] = []
    rest: list[str] = []
    back: list[str] = []
    for opt in filter(None, options):
        name, eq, value = opt.partition("=")
        if name.startswith("x-") or name in _FSTAB_ONLY:
            continue
        if name in _FLAGS and eq:
            (front if name == "cluster" else back).extend([_FLAGS[name], value])
        else:
            rest.append(opt)
    cmd = [sys.executable, "-m", "r2fs.cli", *front, "mount", positional[0], positional[1], *back]
    if rest:
        cmd += ["-o", ",".join(rest)]
    return cmd


def already_mounted(cmd: list[str]) -> bool:
    """Whether the mount `cmd` asks for is up already (same bucket, cluster and place):
    mount(8) cannot tell by itself (the mount's source shows as `r2fs`), and
    `mount -a` must then succeed doing nothing, as for any other file system."""
    import os

    from ..cli import default_cluster_path
    from ..cli.fuse_cmds import is_r2fs_mount
    from ..cli.running import running_mounts

    at = cmd.index("mount")
    bucket, mountpoint = cmd[at + 1], os.path.abspath(cmd[at + 2])
    if not is_r2fs_mount(mountpoint):  # (a daemon still flushing after umount(8) is not a mount)
        return False
    cluster = cmd[cmd.index("--cluster") + 1] if "--cluster" in cmd[:at] else default_cluster_path()
    return any(m.mountpoint == mountpoint and m.bucket == bucket
               for m in running_mounts(os.path.abspath(cluster)))


def main(argv: list[str] | None = None) -> int:
    cmd = command(sys.argv[1:] if argv is None else argv)
    if cmd is None or already_mounted(cmd):
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
