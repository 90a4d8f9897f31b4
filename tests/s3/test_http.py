"""The request/response layer's own helpers (no server needed)."""

from __future__ import annotations

import os

from r2fs.s3.http import SEND_PIECE, send_pieces


def test_send_pieces_passes_bytes_through_and_splits_buffers():
    whole = bytes(os.urandom(1024)) * (4 * SEND_PIECE // 1024 + 3)
    assert [p for p in send_pieces(whole)] == [whole]  # bytes: no copy, no split
    assert next(send_pieces(whole)) is whole
    pieces = list(send_pieces(bytearray(whole)))
    assert all(type(p) is bytes and 0 < len(p) <= SEND_PIECE for p in pieces)
    assert len(pieces) == 5 and b"".join(pieces) == whole
    assert b"".join(send_pieces(memoryview(whole)[7:SEND_PIECE + 9])) == whole[7:SEND_PIECE + 9]
    assert list(send_pieces(bytearray())) == []
