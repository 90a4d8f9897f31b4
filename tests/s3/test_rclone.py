"""rclone (Debian's, an independent Go S3 client) copies a tree up and back, identical."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess

import pytest


def _tree(root) -> None:
    files = {"a.txt": b"alpha\n", "dir one/b.bin": os.urandom(70000), "dir one/sub/c": b"",
             "big/large.bin": os.urandom(12 * 1024 * 1024 + 3), "ünï cödé/ß.txt": "grüße".encode()}
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _same_tree(a: str, b: str) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files, cmp.report()
    match, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in cmp.common_dirs:
        _same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_rclone_tree_roundtrip(gateway, s3, bucket_name, tmp_path):
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (make deps installs it)")
    src, back = tmp_path / "src", tmp_path / "back"
    _tree(src)
    # Only this test's S3 settings: an inherited AWS_* variable (e.g. AWS_CA_BUNDLE) changes rclone's client.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update({"RCLONE_CONFIG": os.devnull,
           "RCLONE_CONFIG_GW_TYPE": "s3", "RCLONE_CONFIG_GW_PROVIDER": "Cloudflare",
           "RCLONE_CONFIG_GW_ACCESS_KEY_ID": gateway.admin.id,
           "RCLONE_CONFIG_GW_SECRET_ACCESS_KEY": gateway.admin.secret,
           "RCLONE_CONFIG_GW_ENDPOINT": gateway.endpoint, "RCLONE_CONFIG_GW_REGION": "auto"})
    common = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--retries", "1", "--low-level-retries", "1"]

    def rclone(*args: str) -> str:
        out = subprocess.run(["rclone", *args, *common], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"rclone {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    rclone("copy", str(src), f"gw:{bucket_name}/tree")
    listed = rclone("lsf", "-R", "--files-only", f"gw:{bucket_name}/tree")
    assert sorted(listed.split("\n")[:-1]) == sorted(
        ["a.txt", "dir one/b.bin", "dir one/sub/c", "big/large.bin", "ünï cödé/ß.txt"])
    # The large file went up as a multipart upload.
    assert s3.head_object(Bucket=bucket_name, Key="tree/big/large.bin")["ETag"].endswith('-3"')
    rclone("check", str(src), f"gw:{bucket_name}/tree")
    rclone("copy", f"gw:{bucket_name}/tree", str(back))
    _same_tree(str(src), str(back))
