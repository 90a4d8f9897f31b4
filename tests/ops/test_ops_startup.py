"""Start-up: lazy imports, --version, bare `r2fs`, help texts, Ctrl-C at any moment."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import r2fs
from r2fs.cli import COMMAND_MODULES, build_parser

#: What building the parser must not import (each costs start-up time for every command).
HEAVY = ("trio", "r2fs.engine.store", "r2fs.engine.meta", "pyfuse3", "lmdb", "hypercorn",
         "cryptography", "pyeclib", "r2fs.fuse.mount", "r2fs.s3.server", "boto3")


def test_command_modules_import_nothing_heavy():
    """The lazy-import rule of r2fs/cli/__init__.py, for every registered module."""
    code = ("import sys, r2fs.cli as c; c.build_parser(); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported while building the parser: {out.stdout.strip()}"


def test_version_and_bare_r2fs_prints_help():
    out = subprocess.run([sys.executable, "-m", "r2fs", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"r2fs {r2fs.__version__}"
    bare = subprocess.run([sys.executable, "-m", "r2fs"], capture_output=True, text=True)
    assert bare.returncode == 0 and bare.stderr == ""
    assert bare.stdout.startswith("usage: r2fs") and "mount" in bare.stdout and "status" in bare.stdout


def _subcommands(parser, prefix=()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subcommands(sub, prefix + (name,))


def test_every_command_has_a_description_and_upper_case_metavars():
    import argparse
    missing, lower = [], []
    for path, sub in _subcommands(build_parser()):
        if not sub.description:
            missing.append(" ".join(path))
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.choices and action.metavar is None:
                continue  # shown as {a,b}
            shown = action.metavar or (action.dest if not action.option_strings else action.dest.upper())
            if isinstance(shown, str) and shown != shown.upper() and "|" not in shown:
                lower.append(f"{' '.join(path)}: {shown}")
    assert not missing, f"no description: {missing}"
    assert not lower, f"metavars not in upper case: {lower}"


def test_cache_dir_is_described_the_same_for_mount_and_serve():
    helps = {}
    for path, sub in _subcommands(build_parser()):
        if path in (("mount",), ("serve",)):
            helps[path[0]] = next(a.help for a in sub._actions if "--cache-dir" in a.option_strings)
    assert helps["mount"] == helps["serve"], helps


def test_modules_listed():
    assert "engine_cmds" in COMMAND_MODULES and "fuse_cmds" in COMMAND_MODULES


def test_ctrl_c_at_any_moment_is_one_line(tmp_path):
    """`timeout -s INT 0.5 r2fs get ...` and the moments around it: never a traceback."""
    from opshelp import clean_env
    env = clean_env(tmp_path)
    cluster = tmp_path / ".local" / "share" / "r2fs"
    big = tmp_path / "big"
    big.write_bytes(os.urandom(24 << 20))
    subprocess.run([sys.executable, "-m", "r2fs", "bucket", "create", "ctrlc"], env=env, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "r2fs", "put", str(big), "ctrlc/big"], env=env, check=True,
                   capture_output=True)
    script = os.path.join(os.path.dirname(sys.executable), "r2fs")
    for delay in ("0.03", "0.1", "0.2", "0.3", "0.5"):
        for args in (("get", "ctrlc/big", str(tmp_path / "out")), ("ls", "ctrlc"), ("status",)):
            proc = subprocess.run(["timeout", "-s", "INT", delay, script, *args], env=env,
                                  capture_output=True, text=True, timeout=60)
            err = proc.stderr.strip()
            if "Traceback" in err and not re.search(r'File "[^"]*/r2fs/[^"]*\.py"', err):
                # the interpreter's own start-up (streams, site, loading the first module
                # file), before any line of r2fs runs: nothing r2fs can catch
                continue
            assert "Traceback" not in err and "Exception ignored" not in err, (delay, args, err)
            assert err in ("", "r2fs: interrupted"), (delay, args, err)
            assert proc.returncode in (0, 124), (delay, args, proc.returncode)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.")]  # no half-written temp
    assert cluster.is_dir()


def test_errors_out_of_nurseries_are_their_cause():
    """ExceptionGroups (every trio nursery) reach the user as the one error inside."""
    import trio

    from r2fs.cli import root_cause
    from r2fs.engine.errors import NoSuchBucket

    cause = NoSuchBucket("no such bucket: x")
    group = BaseExceptionGroup("outer", [ExceptionGroup("inner", [cause]), trio.Cancelled._create()])
    assert root_cause(group) is cause
    ki = KeyboardInterrupt()
    assert root_cause(BaseExceptionGroup("g", [cause, ki])) is ki  # Ctrl-C wins
    assert root_cause(cause) is cause
