"""The mount's write buffer (dirty byte ranges committed through Bucket.update) against
a bytearray model: random writes, truncates, commits and reads, on a real cluster."""

from __future__ import annotations

import random

import pytest
import trio

from r2fs.engine.store import Cluster
from r2fs.fuse.writebuf import FileBuffer, Ranges


def test_ranges_against_a_set():
    rnd = random.Random(1)
    for _ in range(2000):
        r, model = Ranges(), set()
        for _ in range(rnd.randint(1, 8)):
            if rnd.random() < 0.8:
                a = rnd.randint(0, 50)
                b = a + rnd.randint(1, 10)
                r.add(a, b)
                model |= set(range(a, b))
            else:
                c = rnd.randint(0, 60)
                r.cut(c)
                model = {x for x in model if x < c}
        got = set()
        for a, b, staged in r.pieces(0, 80):
            if staged:
                got |= set(range(a, b))
        assert got == model
        assert all(r.ends[i] < r.starts[i + 1] for i in range(len(r.starts) - 1))


@pytest.mark.parametrize("seed,sequential", [(1, False), (2, False), (3, True)])
async def test_buffer_against_a_model(tmp_path, seed, sequential):
    """`sequential`: page-sized writes in order (whole slots encoded in the background,
    after a commit made the file small and inline: sqlite's pattern)."""
    rnd = random.Random(seed)
    c = Cluster.init(str(tmp_path / "c"), chunk_size=256 * 1024)
    try:
        await c.create_bucket("buf-test")
        b = c.bucket("buf-test")
        async with trio.open_nursery() as nursery:
            await _exercise(c, b, rnd, sequential, nursery, str(tmp_path))
    finally:
        c.close()


async def _exercise(c, b, rnd, sequential, nursery, staging):
    model = bytearray()
    buf = FileBuffer(cluster=c, bucket=b, base=None, chunk_size=256 * 1024, staging_dir=staging,
                     nursery=nursery)
    if sequential:
        for i, off in enumerate([0, 4096, 0, 4096] + [4096 * k for k in range(2, 300)]):
            data = rnd.randbytes(4096)
            model.extend(bytes(max(0, off + 4096 - len(model))))
            model[off:off + 4096] = data
            await buf.write(off, data)
            await trio.sleep(0)
            if i == 3:
                await buf.commit("k", custom_metadata={}, http_metadata=None)
        await buf.commit("k", custom_metadata={}, http_metadata=None)
        assert await (await b.get("k")).read() == bytes(model)
    else:
        for _ in range(150):
            op = rnd.random()
            if op < 0.6:
                off, data = rnd.randint(0, len(model) + 5000), rnd.randbytes(rnd.randint(1, 70000))
                model.extend(bytes(max(0, off - len(model))))
                model[off:off + len(data)] = data
                await buf.write(off, data)
            elif op < 0.7:
                size = rnd.randint(0, len(model) + 300000)
                del model[size:]
                model.extend(bytes(size - len(model)))
                await buf.truncate(size)
            elif op < 0.85:
                await buf.commit("k", custom_metadata={}, http_metadata=None)
                assert await (await b.get("k")).read() == bytes(model)
            off, n = rnd.randint(0, len(model)), rnd.randint(0, 300000)
            assert bytes(await buf.read(off, n)) == bytes(model[off:off + n])
    buf.close()
