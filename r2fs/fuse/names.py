"""How object keys map onto a directory tree, and which names are acceptable.

A key `a/b/c` is the file `c` in directory `a/b`; a key ending in `/` (`a/b/`)
is a directory marker (an empty directory that must persist). Paths used in
this package are keys without a leading slash; the root is "".

Keys written over other interfaces do not always map onto a tree. The rules
(documented in docs/semantics.md) are: a key with an empty component (`a//b`,
`/x`), a `.` or `..` component, or a component longer than 255 bytes is not
shown in the mount (it stays in the bucket, untouched; its prefix still keeps
its parent directory non-empty). If `a` is both a file and a prefix (`a/...`),
the file wins: `a` shows as a file, the keys under `a/` are not reachable
through the mount.
"""

from __future__ import annotations

import errno

from .errmap import fail

NAME_MAX = 255  # bytes per component (POSIX NAME_MAX on Linux)
KEY_MAX = 4096  # bytes per key: PATH_MAX (S3 clients cannot name keys past 1,024; docs)


def component(name: bytes) -> str:
    """Validate one name from the kernel and return it as text.

    ENAMETOOLONG above 255 bytes; EINVAL if not UTF-8 (keys are UTF-8 text in
    S3 and R2, so such a name could never be stored faithfully).
    """
    if len(name) > NAME_MAX:
        raise fail(errno.ENAMETOOLONG)
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(errno.EINVAL) from None
    if not text or text in (".", "..") or "/" in text or "\0" in text:
        raise fail(errno.EINVAL)
    return text


def join(parent: str, name: str) -> str:
    """Path of `name` inside directory `parent`, with the PATH_MAX (4,096-byte) key check."""
    path = f"{parent}/{name}" if parent else name
    if len(path.encode("utf-8")) + 1 > KEY_MAX:  # +1: room for the marker's "/"
        raise fail(errno.ENAMETOOLONG)
    return path


def split(path: str) -> tuple[str, str]:
    """(parent path, last component) of a non-root path."""
    parent, _, name = path.rpartition("/")
    return parent, name


def dir_prefix(path: str) -> str:
    """The key prefix of everything inside directory `path` (its marker key)."""
    return f"{path}/" if path else ""


def visible_name(name: str) -> bool:
    """Whether a listed component can be shown as a directory entry."""
    return (bool(name) and name not in (".", "..") and "\0" not in name
            and len(name.encode("utf-8")) <= NAME_MAX)


def is_under(path: str, ancestor: str) -> bool:
    """True if `path` is `ancestor` itself or lies below it."""
    return ancestor == "" or path == ancestor or path.startswith(ancestor + "/")
