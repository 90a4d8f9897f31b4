"""The README, run as written by a new user: a fresh HOME, a clean PATH, this checkout.

Every fenced block of README.md is one of:
  sh       commands to run, one a line (the set-up: make demo, make install, ...)
  console  `$ command` lines, each followed by what it prints
  python   a program, followed where it prints by `# output` comments
  text     a synopsis or a listing: not run, but every `r2fs` option it names must exist
Each is checked: exit status 0, and what it prints is what the README says
(times and ETags of unpredictable content stand for any time and any ETag).
`make demo`'s own printed commands are run as printed, and its S3 endpoint
and keys are tried with a real client.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config

import opshelp

from r2fs.cli import build_parser
from r2fs.cli.fuse_cmds import is_r2fs_mount

README = os.path.join(opshelp.REPO, "README.md")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(kind: str) -> list[str]:
    with open(README) as f:
        found = [(k, body) for k, body in FENCE.findall(f.read())]
    assert all(k in ("sh", "console", "python", "text") for k, _ in found), \
        f"README blocks must say what they are: {sorted({k for k, _ in found})}"
    return [body for k, body in found if k == kind]


def _matches(expected: str, actual: str) -> bool:
    """An expected line, with any date-time and any 32-hex ETag allowed where it shows one."""
    pattern = re.escape(expected)
    pattern = re.sub(r"\d{4}\\-\d\d\\-\d\d\\ \d\d:\d\d:\d\d", r"\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d",
                     pattern)
    return re.fullmatch(pattern, actual) is not None or _etag_free(expected) == _etag_free(actual)


def _etag_free(line: str) -> str:
    return re.sub(r"\b[0-9a-f]{32}\b", "ETAG", line)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A new user's environment: own HOME, clean PATH, nothing of r2fs's set."""
    if os.geteuid() != 0:
        pytest.skip("the README's set-up installs into /usr/local/bin and /sbin (root)")
    home = tmp_path_factory.mktemp("home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HOME": str(home), "PATH": CLEAN_PATH, "LANG": "C.UTF-8",
           # make's own way to pass arguments on: the demo's gateway on a free port, not 9000
           "DEMO_ARGS": f"--listen 127.0.0.1:{port}"}
    with opshelp.installed_links(fresh=True):  # none yet; those there before are put back
        yield home, env, port


def sh(line: str, env: dict, cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", "-c", line], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_setup_block_then_console_then_python(user, tmp_path):
    home, env, port = user
    mnt = os.path.join(opshelp.REPO, "mnt")
    assert not is_r2fs_mount(mnt), "./mnt of this checkout is mounted already"
    [setup] = blocks("sh")
    lines = [ln.split("#")[0].strip() for ln in setup.splitlines() if ln.split("#")[0].strip()]
    assert lines[0] == "make demo" and "make install" in lines and "r2fs demo --stop" in lines
    stop = os.path.join(opshelp.REPO, ".venv", "bin", "r2fs")
    try:
        demo = sh(lines[0], env, opshelp.REPO)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert is_r2fs_mount(mnt)
        assert f"cluster   {home}/.local/share/r2fs (created with the embedded defaults)" in out
        with open(os.path.join(mnt, "hello.txt"), "rb") as f:
            assert f.read().startswith(b"Hello from r2fs")
        # the commands it printed: the full path of .venv/bin/r2fs (r2fs is not on PATH yet)
        printed = [ln.strip() for ln in out.splitlines() if ln.startswith("  ")]
        assert f"{stop} umount {mnt}" in printed
        assert f"{stop} demo --stop --mountpoint {mnt}" in printed
        # the S3 endpoint and keys it printed answer, with the bucket's files
        keys = dict(ln.split()[1].split("=", 1) for ln in printed if ln.startswith("export "))
        aws = next(ln for ln in printed if ln.startswith("aws "))
        endpoint = shlex.split(aws)[2]
        assert endpoint == f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="auto",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
        names = {o["Key"] for o in s3.list_objects_v2(Bucket="demo")["Contents"]}
        assert {"hello.txt", "written-through-the-folder.txt"} <= names

        for line in lines[1:]:
            done = sh(line, env, opshelp.REPO)
            assert done.returncode == 0, (line, done.stdout + done.stderr)
            if line == "make install":
                assert sh("command -v r2fs", env, opshelp.REPO).stdout.strip() == "/usr/local/bin/r2fs"
                assert os.path.realpath("/sbin/mount.fuse.r2fs").startswith(opshelp.REPO)
            if line == "r2fs demo --stop":
                assert f"unmounted {mnt}" in done.stdout and "stopped the S3 gateway" in done.stdout
        assert not is_r2fs_mount(mnt)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

        run_console_blocks(env, str(tmp_path))
        run_python_blocks(env, str(tmp_path))
    finally:
        if is_r2fs_mount(mnt):
            subprocess.run([stop, "demo", "--stop", "--mountpoint", mnt], env=env, capture_output=True,
                           timeout=120)
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        if os.path.isdir(mnt) and not os.listdir(mnt) and not is_r2fs_mount(mnt):
            os.rmdir(mnt)


def run_console_blocks(env: dict, cwd: str) -> None:
    for block in blocks("console"):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        for command, expected in steps:
            done = sh(f"set -o pipefail; {command}", env, cwd, timeout=120)
            assert done.returncode == 0, (command, done.stderr)
            got = done.stdout.splitlines()
            assert len(got) == len(expected) and all(map(_matches, expected, got)), \
                f"$ {command}\nREADME says:\n" + "\n".join(expected) + "\nit printed:\n" + done.stdout


def run_python_blocks(env: dict, cwd: str) -> None:
    for block in blocks("python"):
        expected = [ln.split("# ", 1)[1] for ln in block.splitlines()
                    if "print(" in ln and "# " in ln]
        done = subprocess.run([sys.executable, "-c", block], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == expected


def _parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        out[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
    walk(build_parser(), ())
    return out


def test_every_r2fs_synopsis_names_real_options():
    """The `text` blocks and the command table: each option shown exists where it is shown."""
    parsers = _parsers()
    with open(README) as f:
        table = re.findall(r"^\| `(r2fs [^`]*)`", f.read(), re.M)
    lines = [ln.split("#")[0].strip() for b in blocks("text") for ln in b.splitlines()]
    lines = [ln for ln in lines if ln.startswith("r2fs ")] + table
    assert len(lines) > 15
    for line in lines:
        words = line.split()[1:]
        path: tuple[str, ...] = ()
        for w in words:
            if path + (w,) in parsers:
                path += (w,)
            elif not w.startswith("["):
                break
        options = {o for p in (parsers[()], parsers[path]) for o in p._option_string_actions}
        for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
            assert opt in options, f"README: {line!r}: r2fs {' '.join(path)} has no {opt}"
