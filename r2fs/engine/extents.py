"""An object's content as a list of extents: whole chunks, slices of chunks, holes.

Why: a manifest that can only list whole chunks on a fixed grid makes every
in-place update re-store whole chunks (an fsync of a 4 KiB page cost 4 MiB
re-encoded into 6 shards) and makes a sparse file cost one entry per chunk
slot of its size (a truncate to 10^15 bytes built ~238 million). So, as in
JuiceFS's chunk/slice model, the content is a sequence of extents laid end to
end (`ChunkRef`):

* `[id, size]`          -- a whole chunk (plain objects: nothing else);
* `[id, size, offset]`  -- bytes [offset, offset+size) of chunk `id`
                           (what is left of an older chunk around an update);
* `[HOLE, size]`        -- `size` zero bytes stored as nothing.

An update overlays new extents (its slices) on the old list; a truncate cuts
the list or appends a hole. Both cost what changed, whatever the file size.
The background merge (`slices.py`) re-stores fragmented chunk slots as whole
chunks again. Every extent that names a chunk holds one reference to it, so
refcounts, gc and dedup work as they do for whole chunks.

Pure functions over tuples of ChunkRef; the store persists them with
`to_manifest` / `from_manifest`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import operator
from collections import Counter
from typing import Any, Iterable, Sequence

from .errors import EntityTooLarge
from .types import HOLE, ChunkRef, TiB

#: The largest file size (truncate/write end). At least S3's largest object
#: (5 TiB); 1 PiB keeps every offset far inside a signed 64-bit off_t.
MAX_FILE_SIZE = 1024 * TiB


def check_size(size: int, what: str) -> None:
    """EntityTooLarge (EFBIG through the mount) for sizes past MAX_FILE_SIZE."""
    if size < 0:
        raise EntityTooLarge(f"{what}: negative size {size}")
    if size > MAX_FILE_SIZE:
        raise EntityTooLarge(f"{what}: {size} bytes is larger than the largest file r2fs "
                             f"stores ({MAX_FILE_SIZE} bytes, 1 PiB)")


def hole(size: int) -> ChunkRef:
    return ChunkRef(HOLE, size)


def from_manifest(entries: Iterable[Sequence[Any]] | None) -> tuple[ChunkRef, ...]:
    out = []
    for e in entries or ():
        out.append(ChunkRef(bytes(e[0]), e[1], e[2] if len(e) > 2 else 0))
    return tuple(out)


def ref_ids(entries: Iterable[Sequence[Any]] | None) -> Counter:
    """The chunk references of manifest entries, counted per chunk id (holes name
    none), without decoding them into extents."""
    return Counter(bytes(e[0]) for e in entries or () if e[0])


def to_manifest(refs: Iterable[ChunkRef]) -> list[list[Any]]:
    return [[r.id, r.size] if not r.offset else [r.id, r.size, r.offset] for r in refs]


def is_layered(refs: Iterable[ChunkRef]) -> bool:
    """Anything but whole chunks (slices or holes)?"""
    return any(r.offset or not r.id for r in refs)


_size = operator.attrgetter("size")


def total(refs: Iterable[ChunkRef]) -> int:
    return sum(map(_size, refs))


def starts(refs: Sequence[ChunkRef]) -> list[int]:
    """Where each extent starts, and (last) the end: for bisect (C-speed, no Python loop)."""
    return list(itertools.accumulate(map(_size, refs), initial=0))


def cut(refs: Sequence[ChunkRef], start: int, end: int) -> list[ChunkRef]:
    """The extents covering bytes [start, end), trimmed to it."""
    out: list[ChunkRef] = []
    pos = 0
    for r in refs:
        lo, hi = pos, pos + r.size
        pos = hi
        if hi <= start:
            continue
        if lo >= end:
            break
        a, b = max(lo, start), min(hi, end)
        if a == lo and b == hi:
            out.append(r)
        elif r.hole:
            out.append(hole(b - a))
        else:
            out.append(ChunkRef(r.id, b - a, r.offset + (a - lo)))
    return out


def overlay(refs: Sequence[ChunkRef], offset: int, new: Sequence[ChunkRef]) -> list[ChunkRef]:
    """`refs` with bytes [offset, offset + total(new)) replaced by `new` (a write);
    a write past the end leaves a hole in between."""
    size = total(refs)
    length = total(new)
    head = cut(refs, 0, offset)
    if offset > size:
        head.append(hole(offset - size))
    return normalise([*head, *new, *cut(refs, offset + length, size)])


def overlay_many(refs: Sequence[ChunkRef],
                 pieces: Iterable[tuple[int, Sequence[ChunkRef]]]) -> list[ChunkRef]:
    """`overlay` of many disjoint pieces (offset, extents) in one pass. Python work is
    in proportion to the pieces, not the file: the untouched runs of `refs` are
    copied as list slices and only the joints are normalised (`refs` is normalised),
    so a commit of one 4 KiB page of a file cut into thousands of extents stays
    cheap, and a file written whole (thousands of chunks) stays linear."""
    refs = list(refs)
    st = starts(refs)
    size = st[-1]

    def between(a: int, b: int) -> list[ChunkRef]:
        if a >= b:
            return []
        part: list[ChunkRef] = []
        if a < size:
            i = bisect.bisect_right(st, a) - 1
            j = bisect.bisect_left(st, min(b, size))  # refs[i:j] overlap [a, b)
            if j - i <= 2:
                part = cut(refs[i:j], a - st[i], min(b, size) - st[i])
            else:
                part = [*cut([refs[i]], a - st[i], st[i + 1] - st[i])]
                part.extend(refs[i + 1:j - 1])
                part.extend(cut([refs[j - 1]], 0, min(b, size) - st[j - 1]))
        if b > size:
            _join(part, [hole(b - max(a, size))])
        return part

    out: list[ChunkRef] = []
    pos = 0
    for off, new in sorted(pieces, key=lambda p: p[0]):
        _join(out, between(pos, off))
        _join(out, normalise(new))
        pos = max(pos, off + total(new))
    _join(out, between(pos, size))
    return out


def _join(out: list[ChunkRef], part: list[ChunkRef]) -> None:
    """Append normalised `part` to normalised `out`, joining at the seam."""
    part = [r for r in part[:1] if r.size > 0] + part[1:]
    if not part:
        return
    if out:
        joined = normalise([out[-1], part[0]])
        out[-1:] = joined
        out.extend(part[1:])
    else:
        out.extend(part)


def resize(refs: Sequence[ChunkRef], size: int) -> list[ChunkRef]:
    """A truncate: cut at `size`, or extend with a hole to it."""
    cur = total(refs)
    if size == cur:
        return list(refs)
    if size < cur:
        return _cut_head(refs, size)
    out = list(refs)
    _join(out, [hole(size - cur)])
    return out


def _cut_head(refs: Sequence[ChunkRef], size: int) -> list[ChunkRef]:
    """The first `size` bytes of normalised `refs` (bisect, then one cut extent)."""
    refs = list(refs)
    st = starts(refs)
    j = bisect.bisect_left(st, size)  # refs[:j] start before size
    out = refs[:max(0, j - 1)]
    if j >= 1:
        _join(out, cut([refs[j - 1]], 0, size - st[j - 1]))
    return out


def normalise(refs: Iterable[ChunkRef]) -> list[ChunkRef]:
    """Drop empty extents, join neighbouring holes and contiguous pieces of one chunk."""
    out: list[ChunkRef] = []
    for r in refs:
        if r.size <= 0:
            continue
        if out:
            last = out[-1]
            if last.hole and r.hole:
                out[-1] = hole(last.size + r.size)
                continue
            if not r.hole and last.id == r.id and last.offset + last.size == r.offset:
                out[-1] = ChunkRef(r.id, last.size + r.size, last.offset)
                continue
        out.append(r)
    return out


def layout_etag(refs: Sequence[ChunkRef]) -> str:
    """The ETag of content assembled from extents: a digest of what they name (the
    same extents give the same ETag; any change of content changes it)."""
    h = hashlib.md5()
    h.update(b"".join([b"".join((r.id, r.size.to_bytes(8, "big"), r.offset.to_bytes(8, "big")))
                       for r in refs]))
    return f"{h.hexdigest()}-{max(1, len(refs))}"


def slots(refs: Sequence[ChunkRef], chunk_size: int) -> dict[int, list[tuple[int, ChunkRef]]]:
    """(file offset, extent) per chunk-grid slot the extents start in (for the merge)."""
    out: dict[int, list[tuple[int, ChunkRef]]] = {}
    pos = 0
    for r in refs:
        out.setdefault(pos // chunk_size, []).append((pos, r))
        pos += r.size
    return out
