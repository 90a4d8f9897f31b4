"""A peer cache process for the tests (a mount without FUSE): serves peers, prints its URL.

    python peer_process.py CLUSTER --cache-dir D [--cache-size N] [--peer URL]...

Prints the URL it answers peers on, then runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

from r2fs.engine.store import Cluster


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cluster")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--cache-size", type=int, default=64 << 20)
    p.add_argument("--peer", action="append", default=None)
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cluster = Cluster.open(args.cluster)
    try:
        cluster.reader.configure(cache_dir=args.cache_dir, cache_size=args.cache_size,
                                 peers=args.peer, peer_listen=args.listen)
        print(cluster.reader.self_url, flush=True)
        sys.stdin.read()
    finally:
        cluster.reader.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
