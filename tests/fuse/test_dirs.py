"""Directory markers the mount makes on its own, against a real cluster.

An implicit directory (keys under it, no marker) gets a marker just before the
deletes that would empty it (dirs.keep_before) or just after (dirs.keep_parent).
The caller looked for a marker a moment earlier; a chmod of the directory may
have been committed since, and the defaults must not overwrite it.
"""

from __future__ import annotations

import os
import stat
import time


from fusehelp import BUCKET, run_on_cluster
from r2fs.engine.store import Cluster
from r2fs.fuse import attrs as A
from r2fs.fuse import dirs
from r2fs.fuse.attrs import Owner
from r2fs.fuse.context import MountContext, MountOptions


def _context(c: Cluster, tmp: str) -> MountContext:
    cfg = c.config
    return MountContext(cluster=c, bucket=c.bucket(BUCKET), bucket_name=BUCKET,
                        owner=Owner(os.getuid(), os.getgid()), chunk_size=cfg.chunk_size,
                        staging_dir=tmp, options=MountOptions(), mounted_ns=time.time_ns(),
                        layout=(cfg.k, cfg.m, [n.path for n in cfg.nodes]))


def test_a_marker_made_for_an_implicit_directory_keeps_a_chmod_committed_meanwhile(tmp_path):
    path = str(tmp_path / "c")

    async def main(c: Cluster) -> None:
        ctx = _context(c, str(tmp_path))
        b = ctx.bucket
        await b.put("d/f", b"x")  # d exists implicitly
        await b.put("e/f", b"y")
        # d: a chmod lands between the caller's look for a marker and its put
        await dirs.make_marker(ctx, "d", A.new_attrs(stat.S_IFDIR, 0o644, 0, 0))
        await dirs._implicit_marker(ctx, "d")
        meta = (await b.head("d/")).custom_metadata
        assert stat.S_IMODE(int(meta["mode"])) == 0o644
        # e: no marker yet -- the defaults
        await dirs._implicit_marker(ctx, "e")
        meta = (await b.head("e/")).custom_metadata
        assert stat.S_IMODE(int(meta["mode"])) == A.DEFAULT_DIR_PERM
    run_on_cluster(path, main)
