"""One "host" of a multi-host test: an r2fs process in its own network namespace.

Started as `ip netns exec NS python host_agent.py CLUSTER_DIR [PEER_LISTEN]`; reads
one JSON command per line on stdin, answers one JSON line on stdout. It opens
the cluster (its own cluster.toml, master.key, staging and cache; metadata in
the shared PostgreSQL; shared node directories) and runs store API calls.
"""

from __future__ import annotations

import json
import sys
import time

import trio

from r2fs.engine.errors import R2fsError
from r2fs.engine.store import Cluster, PutItem
from r2fs.engine.types import Conditional


async def main(path: str, peer_listen: str | None) -> None:
    c = Cluster.open(path)
    if peer_listen:
        c.reader.configure(cache_dir=path + "/cache", cache_size=1 << 24, peer_listen=peer_listen,
                           snapshots=False)
    print(json.dumps({"ready": c.reader.self_url}), flush=True)
    stdin = trio.wrap_file(sys.stdin)
    try:
        while True:
            line = await stdin.readline()
            if not line:
                return
            cmd = json.loads(line)
            try:
                out = await run(c, cmd)
                reply = {"ok": out}
            except R2fsError as e:
                reply = {"error": type(e).__name__, "message": str(e)}
            print(json.dumps(reply), flush=True)
    finally:
        c.close()


async def run(c: Cluster, cmd: dict) -> object:
    op = cmd["op"]
    b = c.bucket(cmd.get("bucket", "hosts"))
    if op == "create_bucket":
        await c.create_bucket(cmd["bucket"])
    elif op == "put":
        only_if = Conditional(etag_does_not_match="*") if cmd.get("if_absent") else None
        if cmd.get("at"):  # start together with the other hosts (a race)
            await trio.sleep(max(0.0, cmd["at"] - time.time()))
        return (await b.put(cmd["key"], cmd["data"].encode(), only_if=only_if)).etag
    elif op == "put_many":
        await b.put_many([PutItem(f"{cmd['prefix']}{i:05d}", b"x") for i in range(cmd["n"])])
    elif op == "get":
        return (await (await b.get(cmd["key"])).read()).decode()
    elif op == "list":
        return [o.key for o in (await b.list(prefix=cmd.get("prefix", ""), limit=100_000)).objects]
    elif op == "rename_prefix":
        return await b.rename_prefix(cmd["src"], cmd["dst"])
    elif op == "watch":  # list two prefixes in one listing, repeatedly, until b holds `until`
        seen = set()
        end = time.monotonic() + 120
        while time.monotonic() < end:
            keys = [o.key for o in (await b.list(prefix="", limit=100_000)).objects]
            counts = (sum(k.startswith(cmd["a"]) for k in keys),
                      sum(k.startswith(cmd["b"]) for k in keys))
            seen.add(counts)
            if counts[1] == cmd["until"]:
                break
        return sorted(seen)
    elif op == "put_loop":  # write keys one by one for `seconds`; errors are noted, not fatal
        acked, errors = [], []
        end = time.monotonic() + cmd["seconds"]
        i = 0
        while time.monotonic() < end:
            key = f"{cmd['prefix']}{i:06d}"
            try:
                await b.put(key, key.encode())
                acked.append(key)
                i += 1
            except R2fsError as e:
                errors.append(f"{type(e).__name__}: {e}")
                await trio.sleep(0.05)
        return {"acked": acked, "errors": errors}
    elif op == "local_mode":
        c.writer.configure(mode="local")
    elif op == "record":
        info = await b.head(cmd["key"])
        return [c.chunk_record(r.id) and {"loc": c.chunk_record(r.id)["loc"]} for r in info.chunks]
    else:
        raise ValueError(f"unknown op {op}")
    return None


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
