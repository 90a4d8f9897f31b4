"""Large bodies stream through the gateway: its memory stays bounded whatever the size."""

from __future__ import annotations

import hashlib

import requests

from .helpers import DataPattern

MiB = 1024 * 1024
SIZE = int(__import__("os").environ.get("R2FS_TEST_MEM_SIZE", 320 * MiB))
# Allowed growth of the gateway's peak RSS. Measured: PUT ~60-80 MiB and PUT+GET
# ~125/180/190 MiB for 100/320/1000 MiB objects -- flat in the size (the GET side
# is the engine's read-ahead and per-thread malloc arenas holding 4 MiB chunk buffers).
PUT_LIMIT = 128 * MiB
LIMIT = 256 * MiB


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _reset_peak(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
    except OSError:
        pass
    return _peak_rss(pid)


def test_large_put_and_get_bounded_memory(gateway, s3, bucket_name):
    pattern = DataPattern(SIZE)
    base = _reset_peak(gateway.pid)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket_name, "Key": "large"}, ExpiresIn=600)
    resp = requests.put(url, data=pattern.reader())
    assert resp.status_code == 200, resp.text
    assert resp.headers["ETag"] == f'"{pattern.md5}"'
    after_put = _peak_rss(gateway.pid) - base
    assert after_put < PUT_LIMIT, f"gateway peak RSS grew by {after_put // MiB} MiB during a {SIZE // MiB} MiB PUT"
    body = s3.get_object(Bucket=bucket_name, Key="large")["Body"]
    h, n = hashlib.md5(), 0
    for piece in body.iter_chunks(4 * MiB):
        h.update(piece)
        n += len(piece)
    assert n == SIZE and h.hexdigest() == pattern.md5
    grown = _peak_rss(gateway.pid) - base
    assert grown < LIMIT, f"gateway peak RSS grew by {grown // MiB} MiB moving {SIZE // MiB} MiB"
