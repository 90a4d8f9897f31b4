"""One FUSE connection: the read loop on /dev/fuse, dispatch, replies, notifications.

The request thread reads every request into one preallocated buffer
(`os.readv`, GIL released while blocked), decodes it with `struct`, and
calls the filesystem:

1. If the filesystem has a synchronous `now_<op>` method, it is called
   right here, under the filesystem's state lock (see `StateLock`). It
   answers from memory or raises `WouldBlock`.
2. Otherwise (or on WouldBlock) the request goes to the trio thread: the
   async `<op>` method runs as a trio task, and that task writes the reply
   when the work is done.

Replies are single `os.writev` calls, so both threads may write them. A
reply to a request the kernel has meanwhile given up on (INTERRUPT, the
caller died) fails with ENOENT: ignored. Unmounting ends the loop with
ENODEV.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Any, Callable

import trio

from . import api
from . import proto as P
from .api import FUSEError, RequestContext

log = logging.getLogger("r2fs.fuse")

#: Replies with more parts than this are joined into one buffer first (writev's
#: IOV_MAX is 1024; one iovec goes to the header).
_MAX_PARTS = 1023

MAX_WRITE = 1 << 20
MAX_PAGES = MAX_WRITE // 4096
#: The read buffer holds the biggest request: a MAX_WRITE write plus its headers.
BUFFER_SIZE = MAX_WRITE + 4096
#: Requests a trio task may abandon when INTERRUPT arrives (nothing half-done stays behind).
INTERRUPTIBLE = {"lookup", "getattr", "readlink", "open", "read", "statfs", "getxattr",
                 "listxattr", "opendir", "readdir"}
#: How often requests in trio are checked for callers being killed (see `_watch`).
WATCH_INTERVAL = 0.5
PF_EXITING = 0x4  # /proc/PID/stat flags: the task is exiting
SIGKILL_BIT = 1 << (9 - 1)  # SIGKILL in /proc/PID/status signal masks


def dying(pid: int) -> bool:
    """Whether task `pid` is being killed: SIGKILL pending, or exiting because of a signal.

    The kernel keeps a caller whose request reached the daemon until it is
    answered -- even after SIGKILL, and uninterruptibly for FLUSH while the
    process exits (its files close). Such a caller will never see the answer.
    An ordinary exit (exit code, no signal) is not dying: its close() must
    still commit before the process is gone. Tasks /proc does not show are
    not guessed at (pid 0: the kernel's own writeback).
    """
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rpartition(b")")[2].split()
        flags, exit_code = int(rest[6]), int(rest[49]) if len(rest) > 49 else 0  # fields 9, 52
        if flags & PF_EXITING and exit_code & 0x7F:
            return True
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & SIGKILL_BIT:
                    return True
    except (OSError, ValueError, IndexError):
        return False
    return False


class WouldBlock(Exception):
    """A `now_<op>` fast path cannot answer from memory: run the async handler."""


class StateLock:
    """The one lock between the request thread and the trio thread.

    The trio thread holds it for every task step (`instrument`), so a fast
    path in the request thread sees the filesystem's state only between
    steps, exactly as another trio task would. The request thread holds it
    only while answering from memory, never while waiting for anything.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquire = self.lock.acquire
        self.release = self.lock.release

    def instrument(self) -> trio.abc.Instrument:
        lock = self.lock

        class Steps(trio.abc.Instrument):
            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                lock.acquire()

            def after_task_step(self, task: trio.lowlevel.Task) -> None:
                lock.release()

        return Steps()


class Session:
    """Serve one mounted /dev/fuse descriptor with the filesystem `fs`."""

    def __init__(self, fd: int, fs: Any, state: StateLock, *, writeback: bool = False,
                 killpriv: bool = False) -> None:
        self.fd = fd
        self.fs = fs
        self.state = state
        self.want_writeback = writeback
        self.want_killpriv = killpriv
        self.writeback = False  # as negotiated
        self.killpriv_v2 = False
        self.minor = 0
        self.requests = 0  # answered or dispatched, for the bench
        self.slow: dict[str, int] = {}  # requests run in trio, by op (the bench prints them)
        self._buf = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        # requests running in trio: unique -> (cancel scope, op, caller pid, start); trio thread only
        self._inflight: dict[int, tuple[trio.CancelScope, str, int, float]] = {}
        self._answered: set[int] = set()  # answered EINTR early: their own reply is dropped
        self._pid = 0  # the caller of the request being decoded (request thread)
        self._fast: dict[str, Callable[..., Any]] = {}
        self._thread: threading.Thread | None = None
        self.ended = threading.Event()
        self._handlers: dict[int, Callable[[int, int, memoryview, RequestContext], None]] = {
            P.LOOKUP: self._lookup, P.FORGET: self._forget, P.BATCH_FORGET: self._batch_forget,
            P.GETATTR: self._getattr, P.SETATTR: self._setattr, P.READLINK: self._readlink,
            P.SYMLINK: self._symlink, P.MKNOD: self._mknod, P.MKDIR: self._mkdir,
            P.UNLINK: self._unlink, P.RMDIR: self._rmdir, P.RENAME: self._rename,
            P.RENAME2: self._rename2, P.LINK: self._link, P.OPEN: self._open, P.READ: self._read,
            P.WRITE: self._write, P.STATFS: self._statfs, P.RELEASE: self._release,
            P.FSYNC: self._fsync, P.SETXATTR: self._setxattr, P.GETXATTR: self._getxattr,
            P.LISTXATTR: self._listxattr, P.REMOVEXATTR: self._removexattr, P.FLUSH: self._flush,
            P.OPENDIR: self._opendir, P.READDIR: self._readdir, P.READDIRPLUS: self._readdirplus,
            P.RELEASEDIR: self._releasedir, P.FSYNCDIR: self._fsyncdir, P.CREATE: self._create,
            P.INTERRUPT: self._interrupt, P.DESTROY: self._destroy, P.INIT: self._init,
            P.IOCTL: self._ioctl,
        }

    # --- running ------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Start the request thread; trio tasks for slow requests go to `nursery`."""
        self._token = trio.lowlevel.current_trio_token()
        self._nursery = nursery
        for name in dir(self.fs):
            if name.startswith("now_"):
                self._fast[name[4:]] = getattr(self.fs, name)
        self._thread = threading.Thread(target=self._loop, name="fuse-requests", daemon=True)
        self._thread.start()
        nursery.start_soon(self._watch)

    async def wait_ended(self) -> None:
        """Until the kernel ends the connection (unmount)."""
        await trio.to_thread.run_sync(self.ended.wait, abandon_on_cancel=True)

    def _loop(self) -> None:
        fd, view, buf = self.fd, self._view, self._buf
        unpack = P.IN_HEADER.unpack_from
        handlers = self._handlers
        try:
            while True:
                try:
                    n = os.readv(fd, [view])
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                        continue  # (ENOENT: the request was aborted before we read it)
                    if exc.errno == errno.ENODEV:
                        return  # unmounted
                    raise
                if n < P.IN_HEADER.size:
                    log.error("short FUSE request (%d bytes)", n)
                    continue
                length, opcode, unique, nodeid, uid, gid, pid, _, _ = unpack(buf, 0)
                ctx = RequestContext(uid, gid, pid)
                self._pid = pid
                handler = handlers.get(opcode)
                self.requests += 1
                try:
                    if handler is None:
                        self.reply_error(unique, errno.ENOSYS)
                    else:
                        handler(unique, nodeid, view[P.IN_HEADER.size:n], ctx)
                except FUSEError as exc:
                    self.reply_error(unique, exc.errno)
                except Exception:  # noqa: BLE001 - one bad request must not end the mount
                    log.exception("FUSE request %d failed", opcode)
                    self.reply_error(unique, errno.EIO)
                if opcode == P.DESTROY:
                    return
        except Exception:  # noqa: BLE001
            log.exception("the FUSE request loop stopped")
        finally:
            self.ended.set()

    # --- replies -------------------------------------------------------------------------

    def reply(self, unique: int, *parts: bytes | memoryview) -> None:
        """Answer `unique` with `parts`; a reply the kernel refuses is answered with EIO.

        Why the join: writev takes at most IOV_MAX (1024) buffers, and a readdir reply
        is one part per entry -- kernel 6.18 asks for readdir buffers large enough to
        hold more than that, and the EINVAL left the caller waiting forever."""
        size = P.OUT_HEADER.size + sum(len(p) for p in parts)
        if len(parts) >= _MAX_PARTS:
            parts = (b"".join(parts),)
        try:
            os.writev(self.fd, [P.OUT_HEADER.pack(size, 0, unique), *parts])
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):  # interrupted / unmounted
                log.error("FUSE reply failed (answered with EIO): %s", exc)
                self.reply_error(unique, errno.EIO)

    def reply_error(self, unique: int, code: int) -> None:
        try:
            os.write(self.fd, P.OUT_HEADER.pack(P.OUT_HEADER.size, -code, unique))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.error("FUSE error reply failed: %s", exc)

    def _notify(self, code: int, *parts: bytes | memoryview) -> None:
        """Raises OSError (ENOENT: the kernel does not know that inode/entry)."""
        size = P.OUT_HEADER.size + sum(len(p) for p in parts)
        os.writev(self.fd, [P.OUT_HEADER.pack(size, code, 0), *parts])

    # Notifications. They may block in the kernel until requests on the same
    # inode/directory are answered: never send them from the request thread,
    # nor from a trio task step (it holds the state lock) -- use a worker thread.

    def invalidate_inode(self, ino: int, attr_only: bool = False) -> None:
        self._notify(P.NOTIFY_INVAL_INODE, P.NOTIFY_INVAL_INODE_OUT.pack(ino, -1 if attr_only else 0, 0))

    def invalidate_entry(self, parent: int, name: bytes, expire_only: bool = False) -> None:
        """`expire_only`: the kernel looks the name up again before using it, but does not
        unhash a dentry in use (a process's cwd there would get ENOENT from getcwd)."""
        flags = P.NOTIFY_EXPIRE_ONLY if expire_only and self.minor >= 38 else 0
        self._notify(P.NOTIFY_INVAL_ENTRY, P.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), flags),
                     name, b"\0")

    def notify_delete(self, parent: int, child: int, name: bytes) -> None:
        self._notify(P.NOTIFY_DELETE, P.NOTIFY_DELETE_OUT.pack(parent, child, len(name), 0), name, b"\0")

    def notify_store(self, ino: int, offset: int, data: bytes | memoryview) -> None:
        self._notify(P.NOTIFY_STORE, P.NOTIFY_STORE_OUT.pack(ino, offset, len(data), 0), data)

    # --- dispatch --------------------------------------------------------------------------

    def _call(self, unique: int, op: str, args: tuple, encode: Callable[[Any], tuple] | None,
              slow_args: Callable[[], tuple] | None = None) -> None:
        """Answer `op` now from memory if the filesystem can, else in a trio task."""
        fast = self._fast.get(op)
        if fast is not None:
            state = self.state
            state.acquire()
            try:
                result = fast(*args)
            except WouldBlock:
                result = WouldBlock
            finally:
                state.release()
            if result is not WouldBlock:
                if encode is not None:
                    self.reply(unique, *encode(result))
                return
        if slow_args is not None:
            args = slow_args()  # (copies what points into the read buffer)
        self.slow[op] = self.slow.get(op, 0) + 1
        assert self._token is not None
        self._token.run_sync_soon(self._spawn, unique, op, args, encode, self._pid)

    def _spawn(self, unique: int, op: str, args: tuple, encode: Callable[[Any], tuple] | None,
               pid: int = 0) -> None:
        scope = trio.CancelScope()
        self._inflight[unique] = (scope, op, pid, trio.current_time())
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, unique, op, args, encode, scope)

    async def _serve(self, unique: int, op: str, args: tuple, encode: Callable[[Any], tuple] | None,
                     scope: trio.CancelScope) -> None:
        try:
            with scope:
                try:
                    result = await getattr(self.fs, op)(*args)
                    parts = encode(result) if encode is not None else None
                except FUSEError as exc:
                    if unique not in self._answered:
                        self.reply_error(unique, exc.errno)
                    return
                except Exception:  # noqa: BLE001 - a bug costs this request an EIO
                    log.exception("internal error in %s", op)
                    if unique not in self._answered:
                        self.reply_error(unique, errno.EIO)
                    return
                if parts is not None and unique not in self._answered:
                    self.reply(unique, *parts)
            if scope.cancelled_caught and unique not in self._answered:
                self.reply_error(unique, errno.EINTR)
        finally:
            self._inflight.pop(unique, None)
            self._answered.discard(unique)

    # --- requests -------------------------------------------------------------------------

    def _init(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        major, minor, max_readahead, flags = P.INIT_IN.unpack_from(body, 0)[:4]
        flags2 = P.INIT_IN.unpack_from(body, 0)[4] if len(body) >= P.INIT_IN.size else 0
        if major != P.KERNEL_MAJOR or minor < 26:
            log.error("kernel FUSE protocol %d.%d is too old (need 7.26+)", major, minor)
            self.reply_error(unique, errno.EPROTO)
            return
        self.minor = min(minor, P.KERNEL_MINOR)
        want = (P.ASYNC_READ | P.ATOMIC_O_TRUNC | P.BIG_WRITES | P.AUTO_INVAL_DATA
                | P.DO_READDIRPLUS | P.ASYNC_DIO | P.PARALLEL_DIROPS | P.MAX_PAGES
                | P.CACHE_SYMLINKS | P.INIT_EXT)
        if self.want_writeback:
            want |= P.WRITEBACK_CACHE
        if self.want_killpriv:
            want |= P.HANDLE_KILLPRIV_V2
        if not flags & P.INIT_EXT:
            flags2 = 0
        got = flags & want
        self.writeback = bool(got & P.WRITEBACK_CACHE)
        self.killpriv_v2 = bool(got & P.HANDLE_KILLPRIV_V2)
        log.debug("FUSE 7.%d, flags %#x of %#x offered", self.minor, got, flags)
        out = P.INIT_OUT.pack(P.KERNEL_MAJOR, self.minor, max_readahead, got & 0xFFFFFFFF,
                              64, 48, MAX_WRITE, 1, MAX_PAGES, 0, 0)
        self.reply(unique, out)
        init = getattr(self.fs, "init", None)
        if init is not None:
            init(self)

    def _destroy(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self.reply(unique)

    def _ioctl(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self.reply_error(unique, errno.ENOTTY)  # (sent on every open(): isatty)

    def _interrupt(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        (target,) = P.INTERRUPT_IN.unpack_from(body, 0)
        assert self._token is not None
        self._token.run_sync_soon(self._cancel, target)

    def _cancel(self, target: int) -> None:
        """INTERRUPT (trio thread): an interruptible request is abandoned and answered EINTR
        at once (its task may still be unwinding, e.g. waiting for a worker thread); any
        other request is answered EINTR at once if its caller is being killed -- the
        change itself runs to completion in the background, as if the caller had died
        just after it."""
        entry = self._inflight.get(target)
        if entry is None or target in self._answered:
            return
        scope, op, pid, _ = entry
        if op in INTERRUPTIBLE:
            scope.cancel()
            self._answer_eintr(target)
        elif dying(pid):
            self._answer_eintr(target)

    def _answer_eintr(self, unique: int) -> None:
        self._answered.add(unique)
        self.reply_error(unique, errno.EINTR)

    async def _watch(self) -> None:
        """No request holds a killed caller for long: a caller that gets SIGKILL while
        its request waits here, or that is exiting because of a signal (its FLUSH, which
        the kernel sends without INTERRUPT), is answered EINTR within WATCH_INTERVAL."""
        while True:
            await trio.sleep(WATCH_INTERVAL)
            limit = trio.current_time() - WATCH_INTERVAL
            for unique, (scope, op, pid, started) in list(self._inflight.items()):
                if started <= limit and unique not in self._answered and dying(pid):
                    if op in INTERRUPTIBLE:
                        scope.cancel()
                    self._answer_eintr(unique)

    def _lookup(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "lookup", (nodeid, _name(body), ctx), _entry)

    def _forget(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        (n,) = P.FORGET_IN.unpack_from(body, 0)
        self._call(unique, "forget", ([(nodeid, n)],), None)

    def _batch_forget(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        count, _ = P.BATCH_FORGET_IN.unpack_from(body, 0)
        base = P.BATCH_FORGET_IN.size
        items = [P.FORGET_ONE.unpack_from(body, base + 16 * i) for i in range(count)]
        self._call(unique, "forget", (items,), None)

    def _getattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "getattr", (nodeid, ctx), _attr)

    def _setattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        (valid, _, fh, size, _, atime, mtime, ctime, atimens, mtimens, ctimens, mode, _, uid, gid,
         _) = P.SETATTR_IN.unpack_from(body, 0)
        attr = api.EntryAttributes()
        fields = api.SetattrFields()
        if valid & P.FATTR_MODE:
            fields.update_mode, attr.st_mode = True, mode
        if valid & P.FATTR_UID:
            fields.update_uid, attr.st_uid = True, uid
        if valid & P.FATTR_GID:
            fields.update_gid, attr.st_gid = True, gid
        if valid & P.FATTR_SIZE:
            fields.update_size, attr.st_size = True, size
        now = None
        if valid & (P.FATTR_ATIME | P.FATTR_ATIME_NOW):
            fields.update_atime = True
            if valid & P.FATTR_ATIME_NOW:
                now = now or _now_ns()
                attr.st_atime_ns = now
            else:
                attr.st_atime_ns = atime * 1_000_000_000 + atimens
        if valid & (P.FATTR_MTIME | P.FATTR_MTIME_NOW):
            fields.update_mtime = True
            if valid & P.FATTR_MTIME_NOW:
                now = now or _now_ns()
                attr.st_mtime_ns = now
            else:
                attr.st_mtime_ns = mtime * 1_000_000_000 + mtimens
        if valid & P.FATTR_CTIME:
            fields.update_ctime, attr.st_ctime_ns = True, ctime * 1_000_000_000 + ctimens
        fields.kill_suidgid = bool(valid & P.FATTR_KILL_SUIDGID)
        self._call(unique, "setattr", (nodeid, attr, fields, fh if valid & P.FATTR_FH else None, ctx), _attr)

    def _readlink(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "readlink", (nodeid, ctx), _data)

    def _symlink(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        name, target = _names(body, 0, 2)
        self._call(unique, "symlink", (nodeid, name, target, ctx), _entry)

    def _mknod(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        mode, rdev, umask, _ = P.MKNOD_IN.unpack_from(body, 0)
        ctx.umask = umask
        self._call(unique, "mknod", (nodeid, _name(body[P.MKNOD_IN.size:]), mode, rdev, ctx), _entry)

    def _mkdir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        mode, umask = P.MKDIR_IN.unpack_from(body, 0)
        ctx.umask = umask
        self._call(unique, "mkdir", (nodeid, _name(body[P.MKDIR_IN.size:]), mode, ctx), _entry)

    def _unlink(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "unlink", (nodeid, _name(body), ctx), _empty)

    def _rmdir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "rmdir", (nodeid, _name(body), ctx), _empty)

    def _rename(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        (newdir,) = P.RENAME_IN.unpack_from(body, 0)
        old, new = _names(body, P.RENAME_IN.size, 2)
        self._call(unique, "rename", (nodeid, old, newdir, new, 0, ctx), _empty)

    def _rename2(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        newdir, flags, _ = P.RENAME2_IN.unpack_from(body, 0)
        old, new = _names(body, P.RENAME2_IN.size, 2)
        self._call(unique, "rename", (nodeid, old, newdir, new, flags, ctx), _empty)

    def _link(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        (old,) = P.LINK_IN.unpack_from(body, 0)
        self._call(unique, "link", (old, nodeid, _name(body[P.LINK_IN.size:]), ctx), _entry)

    def _open(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        flags, open_flags = P.OPEN_IN.unpack_from(body, 0)
        ctx.kill_suidgid = bool(open_flags & P.OPEN_KILL_SUIDGID)
        self._call(unique, "open", (nodeid, flags, ctx), _open_reply)

    def _read(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh, offset, size = P.READ_IN.unpack_from(body, 0)[:3]
        self._call(unique, "read", (fh, offset, size), _data)

    def _write(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh, offset, size, write_flags = P.WRITE_IN.unpack_from(body, 0)[:4]
        data = body[P.WRITE_IN.size:P.WRITE_IN.size + size]
        kill = bool(write_flags & P.WRITE_KILL_SUIDGID)
        self._call(unique, "write", (fh, offset, data, kill), _written,
                   slow_args=lambda: (fh, offset, bytes(data), kill))

    def _statfs(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "statfs", (ctx,), lambda s: (api.pack_statfs(s),))

    def _release(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh = P.RELEASE_IN.unpack_from(body, 0)[0]
        self._call(unique, "release", (fh,), _empty)

    def _fsync(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh, flags, _ = P.FSYNC_IN.unpack_from(body, 0)
        self._call(unique, "fsync", (fh, bool(flags & P.FSYNC_FDATASYNC)), _empty)

    def _flush(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh = P.FLUSH_IN.unpack_from(body, 0)[0]
        self._call(unique, "flush", (fh,), _empty)

    def _setxattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        size, _ = P.SETXATTR_IN.unpack_from(body, 0)
        rest = body[P.SETXATTR_IN.size:]
        name = _name(rest)
        value = bytes(rest[len(name) + 1:len(name) + 1 + size])
        self._call(unique, "setxattr", (nodeid, name, value, ctx), _empty)

    def _getxattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        size, _ = P.GETXATTR_IN.unpack_from(body, 0)
        self._call(unique, "getxattr", (nodeid, _name(body[P.GETXATTR_IN.size:]), ctx),
                   lambda value: _sized(bytes(value), size))

    def _listxattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        size, _ = P.GETXATTR_IN.unpack_from(body, 0)
        self._call(unique, "listxattr", (nodeid, ctx),
                   lambda names: _sized(b"".join(bytes(n) + b"\0" for n in names), size))

    def _removexattr(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "removexattr", (nodeid, _name(body), ctx), _empty)

    def _opendir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._call(unique, "opendir", (nodeid, ctx), lambda fh: (P.OPEN_OUT.pack(fh, 0, 0),))

    def _readdir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext,
                 plus: bool = False) -> None:
        fh, offset, size = P.READ_IN.unpack_from(body, 0)[:3]
        token = api.ReaddirToken(size, plus)
        self._call(unique, "readdir", (fh, offset, token), lambda _: token.parts)

    def _readdirplus(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        self._readdir(unique, nodeid, body, ctx, plus=True)

    def _releasedir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh = P.RELEASE_IN.unpack_from(body, 0)[0]
        self._call(unique, "releasedir", (fh,), _empty)

    def _fsyncdir(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        fh, flags, _ = P.FSYNC_IN.unpack_from(body, 0)
        self._call(unique, "fsyncdir", (fh, bool(flags & P.FSYNC_FDATASYNC)), _empty)

    def _create(self, unique: int, nodeid: int, body: memoryview, ctx: RequestContext) -> None:
        flags, mode, umask, _ = P.CREATE_IN.unpack_from(body, 0)
        ctx.umask = umask
        self._call(unique, "create", (nodeid, _name(body[P.CREATE_IN.size:]), mode, flags, ctx),
                   lambda r: (api.pack_entry(r[1]), api.pack_open(r[0])))


# --- decoding and encoding helpers ----------------------------------------------------------

def _now_ns() -> int:
    import time
    return time.time_ns()


def _name(body: memoryview) -> bytes:
    raw = bytes(body)
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _names(body: memoryview, offset: int, n: int) -> list[bytes]:
    return bytes(body[offset:]).split(b"\0")[:n]


def _entry(e: api.EntryAttributes) -> tuple:
    return (api.pack_entry(e),)


def _attr(e: api.EntryAttributes) -> tuple:
    return (api.pack_attr_out(e),)


def _empty(_: object) -> tuple:
    return ()


def _data(data: bytes | memoryview) -> tuple:
    return (data,)


def _written(n: int) -> tuple:
    return (P.WRITE_OUT.pack(n, 0),)


def _open_reply(fi: api.FileInfo) -> tuple:
    return (api.pack_open(fi),)


def _sized(value: bytes, size: int) -> tuple:
    """getxattr/listxattr: size 0 asks how big; too small a buffer is ERANGE."""
    if size == 0:
        return (P.GETXATTR_OUT.pack(len(value), 0),)
    if len(value) > size:
        raise FUSEError(errno.ERANGE)
    return (value,)
