"""Fixtures of the multi-host tests (helpers in netns.py): one set of namespaces and one
PostgreSQL in the hub for the whole run, a fresh database and host directories per test."""

from __future__ import annotations

import pytest

from netns import HOSTS, Net, make_shared


@pytest.fixture(scope="session")
def net():
    n = Net()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="session")
def pg(net):
    from pgserver import PgServer
    server = PgServer(listen=",".join(f"10.199.{i}.1" for i in range(1, HOSTS + 1)),
                      netns=net.hub)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def shared(tmp_path, net, pg):
    control, dirs = make_shared(tmp_path, pg)
    try:
        yield control, dirs
    finally:
        control.close()
