"""Persistent inode numbers and hard links, inside the store's transactions.

Why: an object store has names, not files, so a mount used to make inode
numbers up per mount and per path -- st_ino changed across rename and
remount, and a file could not have two names. Now:

* Every manifest carries "i", its inode number, handed out from one counter
  (`info` b"ino") in the commit that creates the object. A rename moves the
  manifest and keeps it; an overwrite of a name through any API keeps the
  number of the object it replaces (the same path, new content: what a
  program rewriting a file in place expects); a copy gets a new one.
  Objects of older clusters get theirs in the schema-2 migration (`upgrade`).
* A hard-linked file's content and attributes move into an inode record
  (table `inodes`: u64 ino -> {"m": manifest, "n": [names], "b": bucket});
  each name's entry in `objects` becomes a stub {"i": ino, "lk": 1}. A file
  with one name stays a plain manifest, and a link whose names drop back to
  one is folded back into one (so nothing pays for links it does not use).
  The record holds the chunk references once, however many names there are.

Every function here runs inside a write (or read) transaction of the store.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from .meta.lmdb import SCHEMA_VERSION

if TYPE_CHECKING:
    from .meta import MetaEngine as Meta

log = logging.getLogger(__name__)

INO_KEY = b"ino"  # info: the last inode number handed out
FILE_MODEL_KEY = b"file-model"  # info: FILE_MODEL_VERSION once every object has a number
FILE_MODEL_VERSION = 2
FIRST_INO = 2  # 1 is a mount's root directory
TABLE = "inodes"
MIGRATE_BATCH = 5000


def _key(ino: int) -> bytes:
    return ino.to_bytes(8, "big")


def allocate(meta: "Meta", txn: Any) -> int:
    return meta.next_id(txn, INO_KEY, FIRST_INO)


def is_stub(m: dict | None) -> bool:
    return bool(m and m.get("lk"))


def record(meta: "Meta", txn: Any, ino: int) -> dict | None:
    return meta.get(txn, TABLE, _key(ino))


def effective(meta: "Meta", txn: Any, m: dict | None) -> dict | None:
    """The manifest a name stands for: itself, or (a link's stub) its inode's, with
    "nl" = the number of names."""
    if not is_stub(m):
        return m
    rec = record(meta, txn, m["i"])
    if rec is None:  # cannot happen unless the metadata was damaged: say so, lose nothing
        log.error("inode %d named by a link has no record", m["i"])
        return None
    out = dict(rec["m"])
    out["i"] = m["i"]
    out["nl"] = len(rec["n"])
    return out


def stub(ino: int) -> dict:
    return {"i": ino, "lk": 1}


def make_link(meta: "Meta", txn: Any, bucket: str, src_key: str, src: dict, dst_key: str,
              custom: dict | None) -> dict:
    """Give the file at src_key (manifest `src`) the extra name dst_key; its effective
    manifest. `custom` (if given) replaces the shared custom metadata (ctime)."""
    if is_stub(src):
        rec = record(meta, txn, src["i"])
        rec["n"].append(dst_key)
    else:
        ino = src.get("i") or allocate(meta, txn)
        m = dict(src)
        m["i"] = ino
        rec = {"m": m, "n": [src_key, dst_key], "b": bucket}
        meta.objects.put(txn, bucket, src_key, stub(ino))
    ino = rec["m"]["i"]
    if custom is not None:
        rec["m"] = dict(rec["m"], c=dict(custom))
    meta.put(txn, TABLE, _key(ino), rec)
    meta.objects.put(txn, bucket, dst_key, stub(ino))
    for name in rec["n"]:
        meta.record_change(txn, bucket, name)
    return effective(meta, txn, stub(ino))  # type: ignore[return-value]


def drop_name(meta: "Meta", txn: Any, bucket: str, key: str, m: dict) -> dict | None:
    """`key` (a stub `m`) no longer names its inode (its entry in `objects` was or is
    being replaced by the caller). Returns the content manifest whose chunk
    references must now be released (its last name went), else None."""
    ino = m["i"]
    rec = record(meta, txn, ino)
    if rec is None:
        return None
    names = [n for n in rec["n"] if n != key]
    if not names:
        meta.delete(txn, TABLE, _key(ino))
        return rec["m"]
    # (no change record for the other names: their content is the same, only
    # st_nlink dropped, which other mounts see when their attributes expire -- a
    # change record would make every mount invalidate those paths and their
    # directories, and git links and unlinks every object it writes)
    if len(names) == 1:  # one name left: a plain object again
        meta.delete(txn, TABLE, _key(ino))
        meta.objects.put(txn, bucket, names[0], rec["m"])
    else:
        rec["n"] = names
        meta.put(txn, TABLE, _key(ino), rec)
    return None


def rename_name(meta: "Meta", txn: Any, m: dict, old: str, new: str) -> None:
    """A stub moved from `old` to `new`: its inode's name list follows."""
    rec = record(meta, txn, m["i"])
    if rec is not None:
        rec["n"] = [new if n == old else n for n in rec["n"]]
        meta.put(txn, TABLE, _key(m["i"]), rec)


def replace_content(meta: "Meta", txn: Any, bucket: str, m: dict, manifest: dict) -> dict:
    """A write through one name of a linked file: every name's content changes.
    Returns the old content manifest (its references are the caller's to release)."""
    rec = record(meta, txn, m["i"])
    old = rec["m"]
    new = dict(manifest)
    new["i"] = m["i"]
    rec["m"] = new
    meta.put(txn, TABLE, _key(m["i"]), rec)
    for name in rec["n"]:
        meta.record_change(txn, bucket, name)
    return old


def sizes(meta: "Meta", txn: Any) -> Iterable[int]:
    """Size of every linked file's content (status)."""
    for _, rec in meta.scan(txn, TABLE):
        yield rec["m"].get("s", 0)


# --- format version and migration ------------------------------------------------------------


def upgrade(meta: "Meta") -> None:
    """Number the objects of metadata made before inode numbers (blocking; run at open).

    `info` b"file-model" says the numbering is done. Without it, every object
    lacking "i" gets one, MIGRATE_BATCH per transaction (a kill in between
    resumes where it stopped: objects that have a number keep it); then the
    entry is written, and an LMDB environment of schema 1 is marked schema 2
    so that older r2fs builds refuse it instead of misreading links and holes
    (Meta refuses versions it does not know). Works on any metadata engine.
    """
    with meta.read() as txn:
        if meta.get(txn, "info", FILE_MODEL_KEY) == FILE_MODEL_VERSION:
            return
        version = meta.get(txn, "info", b"schema")
        buckets = [k.decode() for k, _ in meta.scan(txn, "buckets")]
    started = time.monotonic()
    moved = 0
    for bucket in buckets:
        after: bytes | None = None
        while True:
            def batch(txn: Any) -> tuple[int, bytes | None]:
                done = 0
                for key, m in list(meta.objects.scan(txn, bucket, "", after)):
                    if "i" not in m:
                        m["i"] = allocate(meta, txn)
                        meta.objects.put(txn, bucket, key, m)
                        done += 1
                    if done >= MIGRATE_BATCH:
                        return done, key.encode("utf-8")
                return done, None

            n, after = meta.write(batch)
            moved += n
            if after is None:
                break

    def finish(txn: Any) -> None:
        meta.put(txn, "info", FILE_MODEL_KEY, FILE_MODEL_VERSION)
        if version == 1:  # an LMDB environment of schema 1
            meta.put(txn, "info", b"schema", SCHEMA_VERSION)

    meta.write(finish)
    if moved:
        log.info("metadata at %s: %d objects given inode numbers in %.1f s",
                 meta.describe(), moved, time.monotonic() - started)
