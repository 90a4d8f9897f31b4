"""The LMDB layer: group commit keeps every writer's outcome its own."""

from __future__ import annotations

import threading

import pytest

from r2fs.engine.meta.lmdb import LmdbMeta

pytestmark = pytest.mark.lmdb_only  # the LMDB engine itself


def test_group_commit_isolates_failures(tmp_path):
    meta = LmdbMeta(str(tmp_path / "meta"))
    try:
        results: dict[int, object] = {}
        barrier = threading.Barrier(32)

        def writer(i: int) -> None:
            def fn(txn):
                meta.put(txn, "records", f"k{i}".encode(), i)
                if i % 5 == 0:
                    raise ValueError(f"writer {i} refuses")
                return i * 10
            barrier.wait()
            try:
                results[i] = meta.write(fn)
            except ValueError as exc:
                results[i] = exc

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with meta.read() as txn:
            stored = {k.decode(): v for k, v in meta.scan(txn, "records")}
        for i in range(32):
            if i % 5 == 0:
                assert isinstance(results[i], ValueError) and str(i) in str(results[i])
                assert f"k{i}" not in stored  # rolled back alone
            else:
                assert results[i] == i * 10 and stored[f"k{i}"] == i
    finally:
        meta.close()


def test_later_writer_in_a_batch_sees_earlier_ones(tmp_path):
    meta = LmdbMeta(str(tmp_path / "meta"))
    try:
        for _ in range(3):
            meta.write(lambda txn: meta.put(txn, "records", b"n",
                                            (meta.get(txn, "records", b"n") or 0) + 1))
        with meta.read() as txn:
            assert meta.get(txn, "records", b"n") == 3
        with pytest.raises(KeyError):
            meta.write(lambda txn: {}["missing"])
    finally:
        meta.close()
