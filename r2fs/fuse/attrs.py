"""POSIX attributes <-> an object's custom metadata.

The names are the ones s3fs uses (`mode`, `uid`, `gid`, `mtime`, `ctime`,
`atime`), so a bucket written by either tool reads sanely in the other and
S3 clients see them as `x-amz-meta-*`. Times are written as
"<seconds>.<9-digit nanoseconds>" (s3fs's own format) so utimens keeps
nanoseconds; plain integer or float seconds are accepted when reading.
Extended attributes live in one JSON entry, `r2fs-xattrs`.
Objects without these entries get defaults: 0644 files, 0755 directories,
owned by the user running the mount, times from the object's upload time.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from dataclasses import dataclass, replace

MODE, UID, GID, MTIME, CTIME, ATIME = "mode", "uid", "gid", "mtime", "ctime", "atime"
RDEV = "rdev"  # device number of a character/block device (s3fs's name)
XATTRS = "r2fs-xattrs"
OWNED_KEYS = (MODE, UID, GID, MTIME, CTIME, ATIME, RDEV, XATTRS)
#: File types stored as objects whose `mode` says what they are (as s3fs does);
#: the kernel runs FIFOs, sockets and devices itself.
SPECIAL_KINDS = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)

DEFAULT_FILE_PERM = 0o644
DEFAULT_DIR_PERM = 0o755
SYMLINK_PERM = 0o777
NS = 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


def format_time(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return f"{sec}.{frac:09d}"


def parse_time(text: str | None) -> int | None:
    """Nanoseconds from "<s>", "<s>.<ns>" or a float; None if unparsable."""
    if not text:
        return None
    text = text.strip()
    try:
        if "." in text:
            sec, _, frac = text.partition(".")
            if sec.lstrip("-").isdigit() and frac.isdigit():
                return int(sec) * NS + int((frac + "000000000")[:9])
            return int(float(text) * NS)
        return int(text) * NS
    except ValueError:
        return None


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0 if text.strip().startswith("0o") else 10)
    except ValueError:
        return None


@dataclass(frozen=True)
class Owner:
    """Who owns objects that carry no uid/gid (the user running the mount)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class PosixAttrs:
    mode: int  # including the S_IFMT type bits
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def with_perm(self, perm: int) -> "PosixAttrs":
        return replace(self, mode=self.kind | (perm & 0o7777))


def from_metadata(meta: dict[str, str], kind: int, owner: Owner, fallback_ns: int) -> PosixAttrs:
    """Attributes of an object of type `kind` (S_IFREG/S_IFDIR/S_IFLNK)."""
    mode = _parse_int(meta.get(MODE))
    default_perm = {stat.S_IFDIR: DEFAULT_DIR_PERM, stat.S_IFLNK: SYMLINK_PERM}.get(kind, DEFAULT_FILE_PERM)
    perm = (mode & 0o7777) if mode is not None else default_perm
    uid = _parse_int(meta.get(UID))
    gid = _parse_int(meta.get(GID))
    mtime = parse_time(meta.get(MTIME))
    mtime = fallback_ns if mtime is None else mtime
    ctime = parse_time(meta.get(CTIME))
    atime = parse_time(meta.get(ATIME))
    return PosixAttrs(mode=kind | perm,
                      uid=owner.uid if uid is None or uid < 0 else uid,
                      gid=owner.gid if gid is None or gid < 0 else gid,
                      mtime_ns=mtime,
                      ctime_ns=mtime if ctime is None else ctime,
                      atime_ns=mtime if atime is None else atime)


def kind_of(key: str, meta: dict[str, str]) -> int:
    """File type of an object: markers are directories; S_IFLNK, FIFO, socket and
    device modes are what they say. A directory type in `mode` on a plain key
    (s3fs's old directory objects) is shown as a regular file."""
    if key.endswith("/"):
        return stat.S_IFDIR
    mode = _parse_int(meta.get(MODE))
    if mode is not None and (stat.S_ISLNK(mode) or stat.S_IFMT(mode) in SPECIAL_KINDS):
        return stat.S_IFMT(mode)
    return stat.S_IFREG


def rdev_of(meta: dict[str, str]) -> int:
    value = _parse_int(meta.get(RDEV))
    return value if value is not None and value >= 0 else 0


def to_metadata(attrs: PosixAttrs, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (other metadata is kept) with the attribute entries replaced."""
    meta = dict(base or {})
    meta.update({
        MODE: str(attrs.mode),
        UID: str(attrs.uid),
        GID: str(attrs.gid),
        MTIME: format_time(attrs.mtime_ns),
        CTIME: format_time(attrs.ctime_ns),
        ATIME: format_time(attrs.atime_ns),
    })
    return meta


def new_attrs(kind: int, perm: int, uid: int, gid: int) -> PosixAttrs:
    t = now_ns()
    return PosixAttrs(mode=kind | (perm & 0o7777), uid=uid, gid=gid, mtime_ns=t, ctime_ns=t, atime_ns=t)


# --- extended attributes ---------------------------------------------------------

def get_xattrs(meta: dict[str, str]) -> dict[str, bytes]:
    raw = meta.get(XATTRS)
    if not raw:
        return {}
    try:
        items = json.loads(raw)
        return {str(k): base64.b64decode(v) for k, v in items.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def with_xattrs(meta: dict[str, str], xattrs: dict[str, bytes]) -> dict[str, str]:
    out = dict(meta)
    if xattrs:
        out[XATTRS] = json.dumps({k: base64.b64encode(v).decode() for k, v in sorted(xattrs.items())},
                                 separators=(",", ":"))
    else:
        out.pop(XATTRS, None)
    return out
