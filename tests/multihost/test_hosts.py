"""Several hosts sharing one cluster: r2fs processes in network namespaces of their own
(netns.py: the topology), each running tests/multihost/host_agent.py over the store API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from netns import make_shared, needs_netns

from r2fs.engine import config as cfgmod
from r2fs.engine.writer import TEST_KILL_ENV

AGENT = os.path.join(os.path.dirname(__file__), "host_agent.py")

pytestmark = needs_netns


class Host:
    """host_agent.py in a namespace; `call(op, ...)` sends one command, returns its reply."""

    def __init__(self, ns: str, path: str, peer_listen: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, AGENT, path]
            + ([peer_listen] if peer_listen else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        ready = self._reply()
        self.peer_url = ready["ready"]

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("host agent died: " + self.proc.stderr.read()[-2000:])
        return json.loads(line)

    def send(self, op: str, **kw: object) -> None:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def call(self, op: str, **kw: object) -> dict:
        self.send(op, **kw)
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def hosts(net, shared):
    control, dirs = shared
    made: list[Host] = []
    try:
        for i, d in enumerate(dirs, start=1):
            made.append(Host(net.hosts[i - 1], d, peer_listen=f"10.199.{i}.2:0"))
        made[0].call("create_bucket", bucket="hosts")
        yield made
    finally:
        for h in made:
            h.close()


def test_read_and_list_after_write_across_hosts(hosts):
    h1, h2 = hosts
    for i in range(20):
        assert "ok" in h1.call("put", key=f"k{i:02d}", data=f"v{i}")
        assert h2.call("get", key=f"k{i:02d}") == {"ok": f"v{i}"}
        assert h2.call("list", prefix="k")["ok"] == [f"k{j:02d}" for j in range(i + 1)]


def test_conditional_put_race_between_hosts_exactly_one_wins(hosts):
    h1, h2 = hosts
    for round_ in range(10):
        at = time.time() + 0.3
        for h in hosts:
            h.send("put", key=f"race{round_}", data=h.peer_url, if_absent=True, at=at)
        replies = [h._reply() for h in hosts]
        winners = [i for i, r in enumerate(replies) if "ok" in r]
        assert len(winners) == 1, replies
        assert all(r.get("error") == "PreconditionFailed" for r in replies if "ok" not in r)
        assert h2.call("get", key=f"race{round_}")["ok"] == hosts[winners[0]].peer_url


def test_rename_of_10000_keys_is_all_or_nothing_for_a_lister_on_another_host(hosts):
    h1, h2 = hosts
    h1.call("put_many", prefix="src/", n=10_000)
    h2.send("watch", a="src/", b="dst/", until=10_000)
    time.sleep(0.5)
    renamed = h1.call("rename_prefix", src="src/", dst="dst/")
    watched = h2._reply()
    assert renamed == {"ok": 10_000}, renamed
    seen = {tuple(x) for x in watched["ok"]}
    assert seen <= {(10_000, 0), (0, 10_000)} and (0, 10_000) in seen, seen


@pytest.mark.parametrize("step", ["stored", "committed"])
def test_kill_9_of_a_host_mid_commit(net, shared, hosts, step):
    control, dirs = shared
    victim = Host(net.hosts[0], dirs[0], env={TEST_KILL_ENV: step})
    try:
        victim.send("put_many", prefix="batch/", n=500)
        victim.proc.wait(timeout=60)
        assert victim.proc.returncode == -9
    finally:
        victim.close()
    listed = hosts[1].call("list", prefix="batch/")["ok"]
    assert len(listed) == (500 if step == "committed" else 0)
    assert "ok" in hosts[1].call("put", key="batch/after", data="still works")


def test_local_mode_writes_on_one_host_read_on_another_before_replication(hosts):
    h1, h2 = hosts
    h1.call("local_mode")
    data = "z" * (300 * 1024)  # above the inline threshold: a chunk in h1's staging
    assert "ok" in h1.call("put", key="staged", data=data)
    assert h2.call("record", key="staged")["ok"] == [{"loc": "staging"}]
    assert h2.call("get", key="staged") == {"ok": data}


def test_postgresql_crash_mid_workload_then_restart(net, pg, hosts):
    """PostgreSQL stopped with -m immediate while host 1 writes: clean errors (never a
    hang, never a traceback), then recovery once it is back; host 2 reads every key
    host 1 was told was written."""
    h1, h2 = hosts
    h1.send("put_loop", prefix="crash/", seconds=6.0)
    time.sleep(1.5)
    pg.stop("immediate")
    time.sleep(1.5)
    pg.start()
    reply = h1._reply()
    assert "ok" in reply, reply
    result = reply["ok"]
    acked, errors = result["acked"], result["errors"]
    assert errors and all(e.startswith("MetadataUnavailable") for e in errors), errors[:3]
    assert any(k for k in acked)  # it went on after the restart
    listed = set(h2.call("list", prefix="crash/")["ok"])
    assert set(acked) <= listed, sorted(set(acked) - listed)[:5]
    assert h2.call("get", key=acked[-1]) == {"ok": acked[-1]}


def test_a_node_store_down_reads_still_correct_across_hosts(tmp_path, net, pg):
    """Nodes on S3 stores (moto servers in the hub namespace): one store killed, the other
    host still reads everything correctly (decoding around it)."""
    from motoserver import CREDENTIALS, MotoServer
    motos = [MotoServer(host="10.199.1.1", netns=net.hub) for _ in range(2)]
    made: list[Host] = []
    control = None
    try:
        nodes = []
        for i, bucket in enumerate(("bkt0", "bkt1", "bkt2")):
            server = motos[0 if i < 2 else 1]
            server.make_buckets(bucket)
            nodes.append(cfgmod.NodeConfig(f"s{i}", "", extra={"endpoint": server.endpoint},
                                           url=f"s3://{bucket}/n"))
        control, dirs = make_shared(tmp_path, pg, nodes)  # 1 directory + 3 buckets, k=2 m=1
        made = [Host(net.hosts[i], d, env=CREDENTIALS) for i, d in enumerate(dirs)]
        h1, h2 = made
        h1.call("create_bucket", bucket="hosts")
        blobs = {f"o{i}": chr(97 + i) * (200 * 1024 + i) for i in range(6)}
        for k, v in blobs.items():
            assert "ok" in h1.call("put", key=k, data=v)
        motos[1].kill()  # node s2 stops answering
        for k, v in blobs.items():
            assert h2.call("get", key=k) == {"ok": v}
    finally:
        for h in made:
            h.close()
        for m in motos:
            m.close()
        if control is not None:
            control.close()
