"""`mount.fuse.r2fs`: the helper mount(8) runs for `fuse.r2fs` lines in /etc/fstab.

    demo  /mnt/demo  fuse.r2fs  cluster=/var/lib/r2fs,attr_timeout=2,_netdev  0  0

mount(8) calls `mount.fuse.r2fs SOURCE MOUNTPOINT [-n] [-s] [-f] [-v] -o OPTIONS`.
SOURCE is the bucket; `cluster=DIR`, `cache_dir=DIR`, `write_mode=sync|local`
and `region=NAME` are taken out of OPTIONS, the rest are mount options as for
`r2fs mount -o`. It then runs `r2fs mount` (background), so it returns once
the mount answers, as mount(8) expects.
"""

from __future__ import annotations

import subprocess
import sys

#: fstab option -> `r2fs mount` flag
_FLAGS = {"cluster": "--cluster", "cache_dir": "--cache-dir", "write_mode": "--write-mode",
          "region": "--region"}


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
        if name in _FLAGS and eq:
            (front if name == "cluster" else back).extend([_FLAGS[name], value])
        else:
            rest.append(opt)
    cmd = [sys.executable, "-m", "r2fs.cli", *front, "mount", positional[0], positional[1], *back]
    if rest:
        cmd += ["-o", ",".join(rest)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    cmd = command(sys.argv[1:] if argv is None else argv)
    if cmd is None:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
