"""Getting a /dev/fuse descriptor mounted, and unmounting it.

As root: open /dev/fuse and mount(2) it directly (fd=N,rootmode,user_id,
group_id in the data string), exactly what fusermount3 would do. As anyone
else: run Debian's setuid `fusermount3` with one end of a socketpair in
_FUSE_COMMFD; it mounts and passes the /dev/fuse descriptor back over the
socket (SCM_RIGHTS), the protocol libfuse uses. With `auto_unmount`
fusermount3 stays behind, watching the socket, and unmounts when this
process dies, so a killed daemon leaves no dead mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import stat
import subprocess
from dataclasses import dataclass, field

#: mount(2) flags by option name: (set, clear).
_MS_FLAGS = {
    "ro": (1, 0), "rw": (0, 1), "nosuid": (2, 0), "suid": (0, 2), "nodev": (4, 0), "dev": (0, 4),
    "noexec": (8, 0), "exec": (0, 8), "sync": (16, 0), "async": (0, 16), "dirsync": (128, 0),
    "noatime": (1024, 0), "atime": (0, 1024), "nodiratime": (2048, 0), "diratime": (0, 2048),
    "relatime": (1 << 21, 0), "norelatime": (0, 1 << 21), "strictatime": (1 << 24, 0),
}
#: Options the kernel's fuse driver takes in the data string.
_KERNEL_OPTIONS = ("allow_other", "default_permissions")
_KERNEL_VALUED = ("max_read", "blksize")
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountOptionError(ValueError):
    """An option neither r2fs nor the kernel's FUSE driver knows."""


@dataclass
class KernelMountOptions:
    fsname: str = "r2fs"
    subtype: str = "r2fs"
    flags: int = 0  # MS_*
    data: list[str] = field(default_factory=list)  # kernel fuse options
    auto_unmount: bool = True
    words: list[str] = field(default_factory=list)  # as given, for fusermount3


def parse(options: set[str] | list[str]) -> KernelMountOptions:
    """Sort mount options into mount(2) flags and the fuse driver's data string."""
    out = KernelMountOptions()
    for opt in sorted(options):
        name, has_value, value = opt.partition("=")
        if name == "fsname" and has_value:
            out.fsname = value
        elif name == "subtype" and has_value:
            out.subtype = value
        elif name == "auto_unmount":
            out.auto_unmount = True
            continue
        elif name == "no_auto_unmount":
            out.auto_unmount = False
            continue
        elif name in _MS_FLAGS and not has_value:
            set_, clear = _MS_FLAGS[name]
            out.flags = (out.flags | set_) & ~clear
        elif name in _KERNEL_OPTIONS and not has_value:
            out.data.append(name)
        elif name in _KERNEL_VALUED and has_value and value.isdigit():
            out.data.append(opt)
        else:
            raise MountOptionError(f"unknown mount option {opt!r}")
        out.words.append(opt)
    return out


@dataclass
class MountedFd:
    fd: int
    mountpoint: str
    helper: subprocess.Popen | None = None  # fusermount3 left watching (auto_unmount)
    helper_sock: socket.socket | None = None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.helper_sock is not None:
            self.helper_sock.close()  # fusermount3 then unmounts (if still mounted) and exits
        if self.helper is not None:
            try:
                self.helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.helper.kill()


def mount(mountpoint: str, opts: KernelMountOptions) -> MountedFd:
    """Mount a fresh /dev/fuse connection at `mountpoint`; OSError if that fails."""
    if os.geteuid() == 0:
        return _mount_direct(mountpoint, opts)
    return mount_with_fusermount(mountpoint, opts)


def _mount_direct(mountpoint: str, opts: KernelMountOptions) -> MountedFd:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
        data = ",".join([f"fd={fd}", f"rootmode={rootmode:o}", f"user_id={os.getuid()}",
                         f"group_id={os.getgid()}", *opts.data])
        fstype = f"fuse.{opts.subtype}" if opts.subtype else "fuse"
        rc = _libc.mount(opts.fsname.encode(), mountpoint.encode(), fstype.encode(),
                         ctypes.c_ulong(opts.flags), data.encode())
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount: {os.strerror(err)}", mountpoint)
    except BaseException:
        os.close(fd)
        raise
    return MountedFd(fd, mountpoint)


def mount_with_fusermount(mountpoint: str, opts: KernelMountOptions) -> MountedFd:
    """The unprivileged way (also usable as root): Debian's setuid fusermount3 mounts."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    words = [w for w in opts.words if not w.startswith(("fsname=", "subtype="))]
    words += [f"fsname={opts.fsname}", f"subtype={opts.subtype}"]
    if opts.auto_unmount:
        words.append("auto_unmount")
    env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
    proc = subprocess.Popen(["fusermount3", "-o", ",".join(words), "--", mountpoint], env=env,
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    theirs.close()
    try:
        msg, fds, _, _ = socket.recv_fds(ours, 1, 1)
    except OSError:
        fds = []
    if not fds:
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        proc.wait()
        ours.close()
        raise OSError(f"fusermount3: {err or 'no /dev/fuse descriptor came back'}")
    os.set_inheritable(fds[0], False)
    if not opts.auto_unmount:
        proc.wait()
        ours.close()
        return MountedFd(fds[0], mountpoint)
    return MountedFd(fds[0], mountpoint, helper=proc, helper_sock=ours)


def unmount(mountpoint: str) -> None:
    """Detach the mount (lazily: open files keep working until closed). Best effort."""
    if os.geteuid() == 0:
        if _libc.umount2(mountpoint.encode(), MNT_DETACH) == 0:
            return
    subprocess.run(["fusermount3", "-u", "-z", "--", mountpoint], capture_output=True)
