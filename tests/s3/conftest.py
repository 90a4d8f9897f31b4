"""The real gateway (`r2fs serve`) on 127.0.0.1, started once per test session.

Two gateway processes share one cluster: plain http (boto3 then signs the
payload SHA-256) and https with a throwaway self-signed certificate (boto3
then streams aws-chunked bodies with trailing CRC checksums -- its default
over TLS). Keys are made with the real CLI. Servers are always stopped.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

R2FS = [sys.executable, "-m", "r2fs"]


@dataclass
class Keys:
    id: str
    secret: str


@dataclass
class GatewayInfo:
    cluster: str
    endpoint: str
    tls_endpoint: str
    port: int
    admin: Keys
    read_only: Keys
    scoped: Keys
    scoped_bucket: str
    log: str
    pid: int  # the plain-http gateway process

    def client(self, keys: Keys | None = None, *, tls: bool = False, **config) -> "boto3.client":
        keys = keys or self.admin
        cfg = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, **config)
        return boto3.client("s3", endpoint_url=self.tls_endpoint if tls else self.endpoint,
                            region_name="auto", aws_access_key_id=keys.id,
                            aws_secret_access_key=keys.secret, config=cfg, verify=False)


def cli(cluster: str, *args: str) -> str:
    out = subprocess.run([*R2FS, "--cluster", cluster, *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"r2fs {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def make_keys(cluster: str, *args: str) -> Keys:
    lines = dict(line.split("=", 1) for line in cli(cluster, "keys", "create", *args).splitlines() if "=" in line)
    return Keys(lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certfile, keyfile


def _start(cluster: str, port: int, log: str, *extra: str) -> subprocess.Popen:
    logf = open(log, "ab")
    proc = subprocess.Popen([*R2FS, "--cluster", cluster, "serve", "--listen", f"127.0.0.1:{port}", *extra],
                            stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {open(log).read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not start listening within 30 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> GatewayInfo:
    import urllib3

    urllib3.disable_warnings()
    base = tmp_path_factory.mktemp("s3gw")
    cluster = str(base / "cluster")
    cli(cluster, "init")
    admin = make_keys(cluster)
    read_only = make_keys(cluster, "--read-only")
    cli(cluster, "bucket", "create", "scoped-bucket")
    scoped = make_keys(cluster, "--bucket", "scoped-bucket")
    certfile, keyfile = self_signed(str(base))
    port, tls_port = free_port(), free_port()
    log = str(base / "gateway.log")
    procs = []
    try:
        procs.append(_start(cluster, port, log))
        procs.append(_start(cluster, tls_port, log, "--certfile", certfile, "--keyfile", keyfile))
        yield GatewayInfo(cluster, f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}", port,
                          admin, read_only, scoped, "scoped-bucket", log, procs[0].pid)
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture
def s3(gateway):
    return gateway.client()


@pytest.fixture
def s3_tls(gateway):
    return gateway.client(tls=True)


@pytest.fixture
def bucket_name(gateway, s3):
    """A fresh bucket per test, emptied and deleted afterwards."""
    name = "t-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        for up in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        s3.delete_bucket(Bucket=name)
