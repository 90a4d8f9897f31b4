"""The `r2fs` command line, run as a real subprocess on real cluster directories.

Happy paths check what the user gets (bytes, listings, manifests); error paths
check the promise of the CLI: exactly one line on stderr, no traceback, a
non-zero exit status, and nothing half-done left behind.

The helpers and fixtures live in this file on purpose (tests/engine/conftest.py
belongs to the engine's own tests).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import ok, one_line_error, run_on_a_terminal

from r2fs.cli.engine_cmds import BadArgument, parse_object_path, parse_size
from r2fs.cli.progress import Progress, format_size

MiB = 1024 * 1024
TIMEOUT = 120

# --- cli_conftest: helpers -------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", "R2FS_DEBUG")}
    env.update(extra)
    return env


def r2fs(cluster: Path | None, *args: object, input: bytes | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m r2fs [--cluster CLUSTER] ARGS...`, capturing bytes."""
    cmd = [sys.executable, "-m", "r2fs"]
    if cluster is not None:
        cmd += ["--cluster", str(cluster)]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, input=input, capture_output=True, timeout=TIMEOUT,
                          env=env if env is not None else cli_env())


# --- cli_conftest: fixtures --------------------------------------------------------


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-layout cluster (6 nodes, k=4, m=2, 4 MiB chunks) with bucket `data`."""
    path = tmp_path_factory.mktemp("cli") / "cluster"
    out = ok(r2fs(path, "init"))
    assert "6 nodes, k=4, m=2" in out
    ok(r2fs(path, "bucket", "create", "data"))
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 MiB of random bytes: two full 4 MiB chunks and a partial one."""
    path = tmp_path_factory.mktemp("data") / "big.bin"
    path.write_bytes(os.urandom(10 * MiB))
    return path


# --- init and the default cluster ---------------------------------------------------------


def test_init_layout_and_status(tmp_path: Path) -> None:
    path = tmp_path / "c"
    out = ok(r2fs(path, "init", "--nodes", "5", "--k", "3", "--m", "2", "--chunk-size", "1MiB"))
    assert "5 nodes, k=3, m=2, chunk size 1.0 MiB" in out
    assert (path / "cluster.toml").is_file()
    key = path / "master.key"
    assert key.stat().st_size == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in (path / "nodes").iterdir()) == [f"n{i}" for i in range(5)]

    status = ok(r2fs(path, "status"))
    assert "k=3 m=2" in status and "chunk size 1.0 MiB" in status
    assert "nodes:    5" in status
    for i in range(5):
        assert str(path / "nodes" / f"n{i}") in status
    assert "buckets:  0" in status and "objects:  0" in status


def test_cluster_from_env_is_used_never_created(tmp_path: Path) -> None:
    path = tmp_path / "envcluster"
    env = cli_env(R2FS_CLUSTER=str(path))
    msg = one_line_error(r2fs(None, "bucket", "create", "first", env=env))
    assert str(path) in msg and "r2fs init" in msg and not path.exists()
    ok(r2fs(None, "init", env=env))
    ok(r2fs(None, "bucket", "create", "first", env=env))
    assert sorted(p.name for p in (path / "nodes").iterdir()) == [f"n{i}" for i in range(6)]
    status = ok(r2fs(None, "status", env=env))
    assert "k=4 m=2" in status and "chunk size 4.0 MiB" in status and "buckets:  1" in status


def test_mistyped_cluster_is_never_created(tmp_path: Path, cli_cluster: Path) -> None:
    """Only the default location is created on first use: one line naming the path otherwise."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    for path, why in ((tmp_path / "typo", "no such directory"), (notes, "no cluster.toml in it"),
                      (a_file, "it is not a directory"),
                      (cli_cluster / "nodes" / "n0", f"it is inside the cluster at {cli_cluster}")):
        before = sorted(os.listdir(path)) if path.is_dir() else None
        for args in (("status",), ("ls", "data"), ("bucket", "list"), ("put", "-", "data/k")):
            proc = r2fs(path, *args, input=b"")
            msg = one_line_error(proc)
            assert proc.returncode == 1
            assert msg == (f"r2fs: {path} is not an r2fs cluster ({why}); "
                           f"to create one there: r2fs --cluster {path} init"), msg
        assert (sorted(os.listdir(path)) if path.is_dir() else None) == before
    assert not (tmp_path / "typo").exists() and a_file.read_text() == "root:x:0:0\n"
    # the default location, when it holds something else: not taken over either
    home = tmp_path / "home"
    (home / ".local" / "share" / "r2fs").mkdir(parents=True)
    (home / ".local" / "share" / "r2fs" / "mine").write_text("x")
    msg = one_line_error(r2fs(None, "status", env=cli_env(HOME=str(home))))
    assert "not empty" in msg and "nothing was created" in msg


def test_default_cluster_under_home(tmp_path: Path) -> None:
    env = cli_env(HOME=str(tmp_path))
    out = ok(r2fs(None, "bucket", "list", env=env))
    assert out == ""
    assert (tmp_path / ".local" / "share" / "r2fs" / "master.key").is_file()


# --- objects -------------------------------------------------------------------------------------


def test_put_get_10mib_roundtrip(cli_cluster: Path, big_file: Path, tmp_path: Path) -> None:
    out = ok(r2fs(cli_cluster, "put", big_file, "data/dir/big.bin"))
    md5 = hashlib.md5(big_file.read_bytes()).hexdigest()
    assert "put data/dir/big.bin: 10.0 MiB" in out and md5 in out

    dest = tmp_path / "back.bin"
    ok(r2fs(cli_cluster, "get", "data/dir/big.bin", dest))
    assert dest.read_bytes() == big_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["back.bin"]  # no temp file left

    # Into an existing directory: the key's base name, like cp.
    ok(r2fs(cli_cluster, "get", "data/dir/big.bin", tmp_path))
    assert (tmp_path / "big.bin").read_bytes() == big_file.read_bytes()

    st = ok(r2fs(cli_cluster, "stat", "data/dir/big.bin"))
    assert f"size:      {10 * MiB} bytes (10.0 MiB)" in st
    assert f"etag:      {md5}" in st
    assert "chunks:    3" in st
    assert "content-type: application/octet-stream" in st  # guessed from the .bin name


def test_stdin_and_stdout(cli_cluster: Path, big_file: Path) -> None:
    data = big_file.read_bytes()
    out = ok(r2fs(cli_cluster, "put", "-", "data/piped", input=data))
    assert "put data/piped: 10.0 MiB" in out
    proc = r2fs(cli_cluster, "get", "data/piped", "-")
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout == data  # nothing but the object on stdout

    ok(r2fs(cli_cluster, "put", "-", "data/empty", input=b""))
    assert r2fs(cli_cluster, "get", "data/empty", "-").stdout == b""


def test_stat_shows_metadata(cli_cluster: Path, tmp_path: Path) -> None:
    src = tmp_path / "note.txt"
    src.write_text("hello\n")
    ok(r2fs(cli_cluster, "put", src, "data/note.txt"))
    st = ok(r2fs(cli_cluster, "stat", "data/note.txt"))
    assert "key:       note.txt" in st
    assert "size:      6 bytes" in st
    assert f"etag:      {hashlib.md5(b'hello' + bytes([10])).hexdigest()}" in st
    assert "content-type: text/plain" in st
    assert "uploaded:  20" in st and st.count("Z") >= 1


def test_ls_prefixes_and_recursive(cli_cluster: Path, tmp_path: Path) -> None:
    ok(r2fs(cli_cluster, "bucket", "create", "tree"))
    src = tmp_path / "f"
    src.write_bytes(b"x" * 3)
    for key in ("a/b/c.txt", "a/d.txt", "e.txt"):
        ok(r2fs(cli_cluster, "put", src, f"tree/{key}"))

    top = ok(r2fs(cli_cluster, "ls", "tree")).splitlines()
    assert top[0].split() == ["PRE", "a/"]
    assert top[1].split()[2:] == ["3", "e.txt"] and len(top) == 2

    inner = ok(r2fs(cli_cluster, "ls", "tree/a/")).splitlines()
    assert inner[0].split() == ["PRE", "b/"]
    assert inner[1].split()[2:] == ["3", "d.txt"] and len(inner) == 2

    rec = ok(r2fs(cli_cluster, "ls", "tree", "--recursive")).splitlines()
    assert [line.split()[-1] for line in rec] == ["a/b/c.txt", "a/d.txt", "e.txt"]
    assert ok(r2fs(cli_cluster, "ls", "tree/zzz")) == ""


def test_ls_follows_cursors(tmp_path: Path) -> None:
    """More keys than one page (1000): the CLI must page with cursors."""
    from r2fs.engine.store import Cluster

    path = tmp_path / "c"
    ok(r2fs(path, "init"))
    ok(r2fs(path, "bucket", "create", "many"))
    keys = [f"k/{i:05d}" for i in range(1234)]

    async def fill() -> None:
        c = Cluster.open(str(path))
        try:
            bucket = c.bucket("many")
            for key in keys:
                await bucket.put(key, key.encode())
        finally:
            c.close()

    trio.run(fill)
    rec = ok(r2fs(path, "ls", "many", "--recursive")).splitlines()
    assert [line.split()[-1] for line in rec] == keys
    flat = ok(r2fs(path, "ls", "many/k/")).splitlines()
    assert [line.split()[-1] for line in flat] == [k[2:] for k in keys]


def test_rm(cli_cluster: Path, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"bye")
    ok(r2fs(cli_cluster, "put", src, "data/gone"))
    assert ok(r2fs(cli_cluster, "rm", "data/gone")) == "deleted data/gone\n"
    one_line_error(r2fs(cli_cluster, "get", "data/gone", "-"))
    assert "gone" not in ok(r2fs(cli_cluster, "ls", "data"))


def test_bucket_lifecycle(cli_cluster: Path, tmp_path: Path) -> None:
    assert ok(r2fs(cli_cluster, "bucket", "create", "life", "--location", "weur")) == \
        "created bucket life in weur\n"
    listing = ok(r2fs(cli_cluster, "bucket", "list"))
    assert any(line.split()[2:] == ["life", "(weur)"] for line in listing.splitlines())
    assert "data" in listing.split()

    msg = one_line_error(r2fs(cli_cluster, "bucket", "create", "life"))
    assert "life" in msg
    src = tmp_path / "f"
    src.write_bytes(b"1")
    ok(r2fs(cli_cluster, "put", src, "life/x"))
    msg = one_line_error(r2fs(cli_cluster, "bucket", "delete", "life"))
    assert "life" in msg
    ok(r2fs(cli_cluster, "rm", "life/x"))
    assert ok(r2fs(cli_cluster, "bucket", "delete", "life")) == "deleted bucket life\n"
    assert "life" not in ok(r2fs(cli_cluster, "bucket", "list")).split()


def test_status_counts_and_gc(tmp_path: Path, big_file: Path) -> None:
    path = tmp_path / "c"
    ok(r2fs(path, "init"))
    ok(r2fs(path, "bucket", "create", "gcb"))
    ok(r2fs(path, "put", big_file, "gcb/one"))
    ok(r2fs(path, "put", big_file, "gcb/two"))  # same content: deduplicated

    status = ok(r2fs(path, "status"))
    assert "buckets:  1" in status and "objects:  2" in status and "chunks:   3" in status
    assert f"logical:  20.0 MiB ({20 * MiB} bytes" in status
    assert f"unique:   10.0 MiB ({10 * MiB} bytes" in status
    shard_lines = [line for line in status.splitlines() if str(path / "nodes") in line]
    assert len(shard_lines) == 6
    # Columns: ID REGION STATE FREE(n unit) SHARDS MISSING DAMAGED OBJ-DATA SNAPSHOTS OTHER DU PATH.
    # 3 chunks x 6 shards, each on a different node.
    assert sum(int(line.split()[5]) for line in shard_lines) == 18
    assert all(line.split()[2] == "up" for line in shard_lines)

    ok(r2fs(path, "rm", "gcb/one"))
    gc = ok(r2fs(path, "gc", "--grace", "0"))
    assert "chunks removed:  0" in gc  # still referenced by g/two
    ok(r2fs(path, "rm", "gcb/two"))
    gc = ok(r2fs(path, "gc", "--grace", "0"))
    assert "chunks removed:  3" in gc and "shards removed:  18" in gc
    status = ok(r2fs(path, "status"))
    assert "objects:  0" in status and "chunks:   0" in status
    # what is left on the nodes is their (empty) directories, and status says so
    st = json.loads(ok(r2fs(path, "status", "--json")))
    assert all(n["kinds"]["object_data"]["disk_bytes"] == 0 for n in st["nodes"])
    assert st["stored_bytes"] == sum(n["kinds"]["directories"]["disk_bytes"] for n in st["nodes"])


def test_demo_engine_part(tmp_path: Path) -> None:
    """`demo --no-mount`: the engine walk-through alone (tests/fuse/test_demo.py mounts)."""
    env = cli_env(HOME=str(tmp_path))  # the default cluster: the one created on first use
    path = tmp_path / ".local" / "share" / "r2fs"
    out = ok(r2fs(None, "demo", "--no-mount", "--mountpoint", tmp_path / "mnt", env=env))
    assert "created with the embedded defaults" in out and "bucket    demo created" in out
    assert "identical" in out and "hello.txt" in out
    out = ok(r2fs(None, "demo", "--no-mount", "--mountpoint", tmp_path / "mnt", env=env))
    assert "(opened)" in out and "already exists" in out  # reuses the cluster and the bucket
    assert not (tmp_path / "mnt").exists()
    assert b"Hello from r2fs" in r2fs(path, "get", "demo/hello.txt", "-").stdout


# --- every error path: one line, no traceback, non-zero ----------------------------------------


def test_init_refusals(tmp_path: Path, cli_cluster: Path) -> None:
    path = tmp_path / "c"
    assert "7 nodes" in one_line_error(r2fs(path, "init", "--k", "5", "--m", "2"))
    assert "--k" in one_line_error(r2fs(path, "init", "--k", "0"))
    assert "--m" in one_line_error(r2fs(path, "init", "--m=-1"))
    assert "--nodes" in one_line_error(r2fs(path, "init", "--nodes", "3"))  # 4+2 > 3
    assert not path.exists()  # refused before touching anything
    assert "exists" in one_line_error(r2fs(cli_cluster, "init"))
    assert "size" in one_line_error(r2fs(path, "init", "--chunk-size", "4XB"))
    assert "size" in one_line_error(r2fs(path, "init", "--chunk-size", "-4MiB"))
    assert not path.exists()


@pytest.mark.parametrize("name", ["ab", "UPPER", "192.168.1.1", "-dash", "dash-", "under_score",
                                  "x" * 64])
def test_bad_bucket_names(cli_cluster: Path, name: str) -> None:
    msg = one_line_error(r2fs(cli_cluster, "bucket", "create", "--", name))
    assert name in msg
    assert name not in ok(r2fs(cli_cluster, "bucket", "list")).split()


def test_missing_bucket_and_key(cli_cluster: Path, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"1")
    for args in (("put", src, "nosuch/key"), ("get", "nosuch/key", "-"), ("ls", "nosuch"),
                 ("stat", "nosuch/key"), ("rm", "nosuch/key"), ("bucket", "delete", "nosuch")):
        assert "nosuch" in one_line_error(r2fs(cli_cluster, *args)), args
    dest = tmp_path / "out"
    for args in (("get", "data/nokey", dest), ("stat", "data/nokey"), ("rm", "data/nokey")):
        assert "nokey" in one_line_error(r2fs(cli_cluster, *args)), args
    assert not dest.exists()


def test_local_file_errors(cli_cluster: Path, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"content")
    ok(r2fs(cli_cluster, "put", src, "data/here"))

    msg = one_line_error(r2fs(cli_cluster, "get", "data/here", tmp_path / "no" / "dir" / "out"))
    assert str(tmp_path / "no" / "dir" / "out") in msg
    msg = one_line_error(r2fs(cli_cluster, "get", "data/here", src / "under-a-file"))
    assert "under-a-file" in msg
    assert src.read_bytes() == b"content"

    # Overwriting keeps the target's mode and writes through a symlink.
    target = tmp_path / "target"
    target.write_bytes(b"old")
    target.chmod(0o640)
    (tmp_path / "link").symlink_to(target)
    ok(r2fs(cli_cluster, "get", "data/here", tmp_path / "link"))
    assert (tmp_path / "link").is_symlink() and target.read_bytes() == b"content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    msg = one_line_error(r2fs(cli_cluster, "put", tmp_path / "missing", "data/x"))
    assert "missing" in msg
    assert "Is a directory" in one_line_error(r2fs(cli_cluster, "put", tmp_path, "data/x"))
    one_line_error(r2fs(cli_cluster, "stat", "data/x"))  # nothing was written


@pytest.mark.parametrize("args", [
    ("put", "-", "nokey"), ("put", "-", "/key"), ("put", "-", "bucket/"),
    ("get", "justbucket", "-"), ("stat", "x"), ("rm", "x/"), ("ls", "/prefix"),
    ("gc", "--grace", "soon"), ("bucket",), ("bucket", "frobnicate", "x"), ("nonsense",),
])
def test_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = tmp_path / "c"
    proc = r2fs(path, *args, input=b"")
    one_line_error(proc)
    assert proc.returncode == 2
    assert not path.exists()  # argument errors never create the default cluster


def test_bad_key(cli_cluster: Path) -> None:
    assert "1024" in one_line_error(r2fs(cli_cluster, "put", "-", "data/" + "k" * 1100, input=b"x"))


def test_damaged_cluster_dir(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ok(r2fs(path, "init"))
    key = (path / "master.key").read_bytes()
    (path / "master.key").unlink()
    assert "master key" in one_line_error(r2fs(path, "status"))
    assert not (path / "master.key").exists()  # never silently replaced
    (path / "master.key").write_bytes(key + b"x")
    assert "master key" in one_line_error(r2fs(path, "status"))
    (path / "master.key").write_bytes(key)
    config = (path / "cluster.toml").read_text()
    (path / "cluster.toml").write_text(config.replace("format = 1", "format = 99"))
    assert "format" in one_line_error(r2fs(path, "status"))
    (path / "cluster.toml").write_text("not [ toml")
    assert "cluster.toml" in one_line_error(r2fs(path, "status"))


def test_get_of_unreadable_object_leaves_target_alone(tmp_path: Path, big_file: Path) -> None:
    """More than m nodes gone: one clear line, and the old local file is untouched."""
    import shutil

    path = tmp_path / "c"
    ok(r2fs(path, "init"))
    ok(r2fs(path, "bucket", "create", "lost"))
    ok(r2fs(path, "put", big_file, "lost/big"))
    dest = tmp_path / "out"
    dest.write_bytes(b"previous")
    for i in range(2):  # m nodes gone: still readable
        shutil.rmtree(path / "nodes" / f"n{i}")
    ok(r2fs(path, "get", "lost/big", dest))
    assert dest.read_bytes() == big_file.read_bytes()
    dest.write_bytes(b"previous")
    shutil.rmtree(path / "nodes" / "n2")  # m+1
    msg = one_line_error(r2fs(path, "get", "lost/big", dest))
    assert "lost/big" in msg, msg
    assert dest.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out"]  # no temp file left
    status = ok(r2fs(path, "status"))
    assert status.count("DOWN") == 3


def test_wrong_master_key(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ok(r2fs(path, "init"))
    ok(r2fs(path, "bucket", "create", "secret"))
    ok(r2fs(path, "put", "-", "secret/k", input=os.urandom(100_000)))
    (path / "master.key").write_bytes(os.urandom(32))
    for args in (("status",), ("get", "secret/k", "-"), ("ls", "secret")):
        proc = r2fs(path, *args)
        msg = one_line_error(proc)
        assert "key" in msg.lower(), msg
        assert proc.stdout == b""


# --- the progress bar -------------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal(cli_cluster: Path, big_file: Path) -> None:
    """On a tty stderr the bar is drawn; piped (every other test) it is absent."""
    text, _, status = run_on_a_terminal([sys.executable, "-m", "r2fs", "--cluster", str(cli_cluster),
                                         "put", str(big_file), "data/tty"], cli_env(), TIMEOUT)
    assert status == 0
    assert "put data/tty" in text and "100%" in text and "10.0 MiB/10.0 MiB" in text


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_render() -> None:
    stream = _FakeTty()
    with Progress("put b/k", 4 * MiB, stream=stream) as bar:
        bar.update(MiB)
        line = bar.render(bar._start + 1.0, 60)
        assert len(line) <= 60 and line.startswith("put b/k [")
        assert " 25%    1.0 MiB/4.0 MiB    1.0 MiB/s" in line
        # the numbers keep their width as they grow: the line (and the bar) never jitters
        shapes = set()
        for done, seconds in ((1, 1.0), (MiB, 1.0), (3 * MiB + 999_999, 0.01), (4 * MiB, 0.001)):
            bar.done = done
            drawn = bar.render(bar._start + seconds, 70)
            shapes.add((len(drawn), drawn.index("]"), drawn.index("%")))
        assert len(shapes) == 1, shapes
        bar.update(3 * MiB)
    assert stream.getvalue().endswith("\n") and "100%" in stream.getvalue()

    unknown = Progress("put b/k", None, stream=_FakeTty())
    unknown.update(2048)
    assert unknown.render(unknown._start + 2.0, 80) == "put b/k    2.0 KiB    1.0 KiB/s"

    piped = io.StringIO()
    with Progress("put b/k", 10, stream=piped) as bar:
        bar.update(10)
    assert piped.getvalue() == ""

    failed = _FakeTty()
    with pytest.raises(RuntimeError):
        with Progress("get b/k", 10, stream=failed) as bar:
            bar.update(5)
            raise RuntimeError("boom")
    assert not failed.getvalue().endswith("\n")  # wiped, the error line stands alone


# --- parsing helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("4MiB", 4 * MiB), ("512KiB", 512 * 1024), ("2GiB", 2 * 1024 ** 3), ("4096", 4096),
    ("1.5KiB", 1536), ("4m", 4 * MiB), ("1MB", 1_000_000), (" 7 B ", 7), ("1TiB", 1024 ** 4),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "4XB", "-1", "1.3B", "4 Mi B", "0x10"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BadArgument, match="invalid size"):
        parse_size(text)


def test_parse_object_path_and_format_size() -> None:
    assert parse_object_path("b/dir/key") == ("b", "dir/key")
    assert parse_object_path("b", key_required=False) == ("b", "")
    assert parse_object_path("b/pre/", key_required=False) == ("b", "pre/")
    with pytest.raises(BadArgument):
        parse_object_path("b/")
    assert format_size(0) == "0 B" and format_size(1023) == "1023 B"
    assert format_size(1536) == "1.5 KiB" and format_size(10 * MiB) == "10.0 MiB"


def test_status_lines_print_counters_and_extra_sections() -> None:
    """Sections other subsystems add to ClusterStatus appear without the CLI knowing them."""
    from r2fs.cli.engine_cmds import status_lines
    from r2fs.engine.types import ClusterStatus, NodeStatus

    st = ClusterStatus(
        path="/c", k=4, m=2, chunk_size=4 * MiB,
        nodes=[NodeStatus("n0", "/c/nodes/n0", "weur", 10 * MiB, 3, 3 * MiB, True),
               NodeStatus("n1", "/c/nodes/n1", "", 0, 0, 0, False)],
        buckets=1, objects=2, chunks=3, logical_bytes=6 * MiB, unique_bytes=4 * MiB,
        stored_bytes=6 * MiB,
        counters={"photos": {"class_b": 7, "class_a": 2}},
        extra={"cache": {"size": 123, "hits": 4}, "replication": {"pending": [1, 2]}, "mode": "local"},
    )
    lines = status_lines(st)
    text = "\n".join(lines)
    assert lines[2].startswith("nodes:    2 ")
    # ID REGION STATE FREE SHARDS MISSING DAMAGED OBJ-DATA SNAPSHOTS OTHER DU PATH
    assert lines[4].split() == ["n0", "weur", "up", "10.0", "MiB", "3", "0", "0", "0", "B",
                                "0", "B", "0", "B", "0", "B", "/c/nodes/n0"]
    assert lines[5].split()[:3] == ["n1", "-", "DOWN"]
    assert "stored:   6.0 MiB (6291456 bytes on the nodes, all kinds) (1.50x unique)" in text
    assert "  photos: class_a=2, class_b=7" in text
    assert "cache:\n  size: 123\n  hits: 4" in text
    assert "replication:\n  pending:\n    - 1\n    - 2" in text
    assert lines[-1] == "mode: local"


def test_init_with_regions(tmp_path):
    import tomllib
    c = tmp_path / "regions"
    out = subprocess.run([sys.executable, "-m", "r2fs", "--cluster", str(c), "init",
                          "--regions", "east:3,west:3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cfg = tomllib.loads((c / "cluster.toml").read_text())
    regions = sorted(n["region"] for n in cfg["nodes"].values())
    assert regions == ["east"] * 3 + ["west"] * 3
    for bad in (["--regions", "east"], ["--regions", "east:0"], ["--regions", "east:3,west:3", "--nodes", "5"]):
        out = subprocess.run([sys.executable, "-m", "r2fs", "--cluster", str(tmp_path / "x"), "init", *bad],
                             capture_output=True, text=True)
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr
