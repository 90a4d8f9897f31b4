"""The suite cleans up after itself: no mount-*.log or pid files left in /tmp/r2fs-UID."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import opshelp

INNER = '''
import os, sys
sys.path.insert(0, {fuse!r})
from fusehelp import BUCKET, Mount, make_cluster
from r2fs.cli.fuse_cmds import log_file, runtime_dir

def test_mount_once():
    make_cluster({cluster!r})
    os.makedirs({mp!r}, exist_ok=True)
    m = Mount({cluster!r}, BUCKET, {mp!r})
    try:
        m.start()
        assert os.path.exists(log_file({mp!r}))
        print("RUNTIME", runtime_dir(), file=open({note!r}, "w"))
    finally:
        m.stop()
'''


def test_a_test_session_leaves_no_mount_logs(tmp_path):
    mp = str(tmp_path / "mnt")
    note = str(tmp_path / "note")
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_inner.py").write_text(textwrap.dedent(INNER.format(
        fuse=opshelp.FUSE_TESTS, cluster=str(tmp_path / "c"), mp=mp, note=note)))
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}  # as in CI
    env["PYTHONPATH"] = tests  # the suite's own tests/conftest.py, loaded as a plugin
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "conftest", "-c", os.devnull, "--rootdir", str(tmp_path),
                           str(tmp_path / "inner")],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runtime = open(note).read().split()[1]
    assert not os.path.exists(runtime), "the session's runtime directory was not removed"
    tag = hashlib.sha1(os.path.realpath(mp).encode()).hexdigest()[:16]
    default = f"/tmp/r2fs-{os.getuid()}"
    for name in (f"mount-{tag}.log", f"mount-{tag}.pid"):
        assert not os.path.exists(os.path.join(default, name)), name
