"""Conditional requests (R2 `onlyIf`, S3 If-* headers) with S3's precedence rules."""

from __future__ import annotations

import math

from .errors import IfMatchOnMissingKey, NotModified, PreconditionFailed
from .types import Conditional, ObjectInfo


def _etags(spec: str) -> set[str]:
    out = set()
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        out.add(part.strip('"'))
    return out


def etag_matches(spec: str, etag: str) -> bool:
    tags = _etags(spec)
    return "*" in tags or etag in tags


def _secs(t: float) -> int:
    return math.floor(t)


def check_read(info: ObjectInfo, cond: Conditional | None) -> None:
    """GET/HEAD: PreconditionFailed (412) or NotModified (304), S3 order."""
    if cond is None:
        return
    what = f"{info.bucket}/{info.key}"
    if cond.etag_matches is not None:
        if not etag_matches(cond.etag_matches, info.etag):
            raise PreconditionFailed(f"{what}: ETag does not match If-Match")
    elif cond.uploaded_before is not None and _secs(info.uploaded) > _secs(cond.uploaded_before):
        raise PreconditionFailed(f"{what}: modified since If-Unmodified-Since")
    if cond.etag_does_not_match is not None:
        if etag_matches(cond.etag_does_not_match, info.etag):
            raise NotModified(f"{what}: ETag matches If-None-Match")
    elif cond.uploaded_after is not None and _secs(info.uploaded) <= _secs(cond.uploaded_after):
        raise NotModified(f"{what}: not modified since If-Modified-Since")


def check_write(current: ObjectInfo | None, cond: Conditional | None, what: str) -> None:
    """PUT/copy/complete: every condition is a precondition (412) on the current version."""
    if cond is None:
        return
    if cond.etag_matches is not None:
        if current is None:
            raise IfMatchOnMissingKey(f"{what}: If-Match names a key that does not exist")
        if not etag_matches(cond.etag_matches, current.etag):
            raise PreconditionFailed(f"{what}: If-Match not satisfied")
    if cond.etag_does_not_match is not None and current is not None:
        if etag_matches(cond.etag_does_not_match, current.etag):
            raise PreconditionFailed(f"{what}: If-None-Match not satisfied (object exists)")
    if current is not None:
        if cond.uploaded_before is not None and _secs(current.uploaded) > _secs(cond.uploaded_before):
            raise PreconditionFailed(f"{what}: modified since the given time")
        if cond.uploaded_after is not None and _secs(current.uploaded) <= _secs(cond.uploaded_after):
            raise PreconditionFailed(f"{what}: not modified since the given time")
