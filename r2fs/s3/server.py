"""Running the gateway: hypercorn's trio worker around `Gateway`.

Hypercorn streams request and response bodies with flow control (a slow
reader or writer stalls the other side instead of filling memory), speaks
HTTP/1.1 and h2, and runs on trio like the rest of r2fs.
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from typing import Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ..engine.store import Cluster
from . import expect
from .app import Gateway

DEFAULT_LISTEN = "127.0.0.1:9000"


def make_config(listen: str, *, certfile: str | None = None, keyfile: str | None = None) -> Config:
    config = Config()
    config.bind = [listen]
    config.worker_class = "trio"
    config.accesslog = None
    # The gateway sends its own `Server: r2fs`; hypercorn's would be a second one.
    config.include_server_header = False
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.h11_max_incomplete_size = 64 * 1024  # request line + headers
    config.graceful_timeout = 5
    if certfile:
        config.certfile, config.keyfile = certfile, keyfile
    return config


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def serve(cluster: Cluster, listen: str = DEFAULT_LISTEN, *, region: str = "auto",
                virtual_hosts: tuple[str, ...] = ("localhost",), certfile: str | None = None,
                keyfile: str | None = None, on_ready: Callable[[str], None] | None = None,
                shutdown_trigger=None, replicate: bool = True) -> None:
    """Serve until SIGINT/SIGTERM (or `shutdown_trigger` returns).

    `replicate`: run the local-uploads replicator in this process while serving."""
    app = Gateway(cluster, region=region, virtual_hosts=virtual_hosts, replicate=replicate)
    expect.install()
    config = make_config(listen, certfile=certfile, keyfile=keyfile)
    scheme = "https" if certfile else "http"

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi",
                                            shutdown_trigger=shutdown_trigger or _until_signal))
        if on_ready is not None:
            on_ready(binds[0] if binds else f"{scheme}://{listen}")


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
