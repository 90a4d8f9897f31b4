"""The one mapping from r2fs errors (and OSError) to errno for the FUSE layer.

Every FUSE request handler is wrapped by `guarded`, so that no exception other
than `FUSEError` ever reaches the session: an unexpected exception there
would stop the whole main loop, taking the mount down for every user. A bug
in one operation must cost that operation an EIO, nothing more.
"""

from __future__ import annotations

import errno
import functools
import logging
from typing import Any, Awaitable, Callable, TypeVar

from .kernel import api as fuse
from .kernel.session import WouldBlock

from ..engine import errors as E

log = logging.getLogger("r2fs.fuse")

#: Most specific class first: lookup walks the exception's MRO.
_ERRNO: dict[type[BaseException], int] = {
    E.NoSuchKey: errno.ENOENT,
    E.NoSuchBucket: errno.ENOENT,
    E.KeyExists: errno.EEXIST,
    E.NotLinkable: errno.EPERM,
    E.PreconditionFailed: errno.EEXIST,  # only used for create-only puts
    E.KeyTooLong: errno.ENAMETOOLONG,
    E.InvalidKey: errno.EINVAL,
    E.BucketNotEmpty: errno.ENOTEMPTY,
    E.EntityTooLarge: errno.EFBIG,
    E.EntityTooSmall: errno.EINVAL,
    E.InvalidRange: errno.EINVAL,
    E.DataUnavailable: errno.EIO,
    E.ChunkMissing: errno.EIO,
    E.ClusterError: errno.EIO,
    E.R2fsError: errno.EIO,
}


def errno_for(exc: BaseException) -> int:
    """The errno a FUSE caller should see for `exc`."""
    if isinstance(exc, fuse.FUSEError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    for cls in type(exc).__mro__:
        if cls in _ERRNO:
            return _ERRNO[cls]
    return errno.EIO


def fail(code: int) -> fuse.FUSEError:
    """A FUSEError to raise (`raise fail(errno.ENOENT)`)."""
    return fuse.FUSEError(code)


T = TypeVar("T")


def guarded(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap one async handler: map errors, log the unexpected, never crash."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except fuse.FUSEError:
            raise
        except (E.R2fsError, OSError) as exc:
            code = errno_for(exc)
            if code == errno.EIO:
                log.error("%s failed: %s", fn.__name__, exc)
            else:
                log.debug("%s: %s -> %s", fn.__name__, exc, errno.errorcode.get(code, code))
            raise fuse.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - the one place a bug becomes EIO
            log.exception("internal error in %s", fn.__name__)
            raise fuse.FUSEError(errno.EIO) from None

    return wrapper


def guarded_now(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap one synchronous fast path (`now_<op>`) the same way; WouldBlock passes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (fuse.FUSEError, WouldBlock):
            raise
        except (E.R2fsError, OSError) as exc:
            code = errno_for(exc)
            if code == errno.EIO:
                log.error("%s failed: %s", fn.__name__, exc)
            raise fuse.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - the one place a bug becomes EIO
            log.exception("internal error in %s", fn.__name__)
            raise fuse.FUSEError(errno.EIO) from None

    return wrapper


def guard_operations(cls: type) -> type:
    """Class decorator: wrap every request handler (async, and `now_` fast path) defined on `cls`."""
    import inspect

    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and not name.startswith("_"):
            setattr(cls, name, guarded(member))
        elif name.startswith("now_") and callable(member):
            setattr(cls, name, guarded_now(member))
    return cls
