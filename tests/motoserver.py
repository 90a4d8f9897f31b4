"""moto's S3 server as a separate process, for node-store tests (loopback only).

Each `MotoServer` is its own process with its own in-memory buckets, so a
test can kill one (`kill()`: SIGKILL, as an outage) while others keep
answering. Always closed by a fixture's finally.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", netns: str | None = None) -> None:
        self.host = host
        self.netns = netns
        self.port = free_port("127.0.0.1" if netns else host)
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        argv = [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", self.host,
                "-p", str(self.port)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **CREDENTIALS}, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            if self.netns:
                r = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c",
                                    f"import socket; socket.create_connection(('{self.host}', "
                                    f"{self.port}), 1)"], capture_output=True, check=False)
                if r.returncode == 0:
                    return
            else:
                try:
                    socket.create_connection((self.host, self.port), 1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def make_buckets(self, *names: str) -> None:
        if self.netns:  # reachable only from inside its namespace
            code = ("import boto3,sys\n"
                    f"c=boto3.client('s3',endpoint_url='{self.endpoint}',region_name='us-east-1',"
                    "aws_access_key_id='testing',aws_secret_access_key='testing')\n"
                    "[c.create_bucket(Bucket=b) for b in sys.argv[1:]]\n")
            subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code, *names],
                           check=True, capture_output=True)
            return
        c = self.client()
        for n in names:
            c.create_bucket(Bucket=n)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    close = kill
