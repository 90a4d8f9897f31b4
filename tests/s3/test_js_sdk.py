"""The AWS JS SDK v3 (`@aws-sdk/client-s3`, from npm) on the machine's node."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

JS_DIR = os.path.join(os.path.dirname(__file__), "js")


@pytest.fixture(scope="module")
def node_modules() -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (make deps installs it)")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@aws-sdk", "client-s3")):
        # What `make deps` does; done here too so the test never silently depends on it.
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=JS_DIR,
                       check=True, timeout=600)
    return JS_DIR


def test_js_sdk_upload_flow(node_modules, gateway, bucket_name):
    env = {**os.environ, "R2FS_ENDPOINT": gateway.endpoint, "R2FS_BUCKET": bucket_name,
           "AWS_ACCESS_KEY_ID": gateway.admin.id, "AWS_SECRET_ACCESS_KEY": gateway.admin.secret}
    out = subprocess.run(["node", "--test", "upload.test.mjs"], cwd=node_modules, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout and "# pass 3" in out.stdout, out.stdout[-2000:]
