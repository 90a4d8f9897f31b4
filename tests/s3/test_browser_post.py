"""The frontend case in a real browser: headless Chromium (Debian's `chromium`)
loads a page from 127.0.0.1 whose script uploads an avatar straight to the
bucket with a signed POST policy (a cross-origin fetch of FormData, so the
bucket's CORS rules and the POST response's CORS headers are exercised), then
a too-large one, and reports what it saw back to the page's own server."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PAGE = """<!doctype html><html><body><p id="out">running</p><script>
const SIGNED = %(signed)s;
async function upload(bytes, name) {
  const form = new FormData();
  for (const [k, v] of Object.entries(SIGNED.fields)) form.append(k, v);
  form.append("file", new Blob([bytes], {type: "image/png"}), name);
  const resp = await fetch(SIGNED.url, {method: "POST", body: form});
  return {status: resp.status, etag: resp.headers.get("ETag"), body: await resp.text()};
}
(async () => {
  const out = {};
  try {
    out.ok = await upload(new Uint8Array([137, 80, 78, 71, 1, 2, 3]), "me.png");
    out.big = await upload(new Uint8Array(5000), "huge.png");
  } catch (e) { out.error = String(e); }
  document.getElementById("out").textContent = JSON.stringify(out);
  await fetch("/result", {method: "POST", body: JSON.stringify(out)});
})();
</script></body></html>"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _page_server(content: dict[str, bytes], results: "queue.Queue[dict]") -> ThreadingHTTPServer:
    """Serves content["page"] at every GET; a POST is the page's report."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = content["page"]
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            results.put(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def test_avatar_upload_from_headless_chromium(gateway, s3, bucket_name):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make deps installs it: APT_S3)")
    results: "queue.Queue[dict]" = queue.Queue()
    content: dict[str, bytes] = {}
    server = _page_server(content, results)
    origin = f"http://127.0.0.1:{server.server_address[1]}"  # another port: a cross-origin upload
    s3.put_bucket_cors(Bucket=bucket_name, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [origin], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    signed = s3.generate_presigned_post(
        bucket_name, "avatars/${filename}", Fields={"Content-Type": "image/png", "success_action_status": "201"},
        Conditions=[["starts-with", "$key", "avatars/"], ["content-length-range", 1, 1024],
                    ["eq", "$Content-Type", "image/png"], {"success_action_status": "201"}], ExpiresIn=300)
    content["page"] = (PAGE % {"signed": json.dumps(signed)}).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(prefix="r2fs-chromium-")
    proc = None
    try:
        try:
            proc = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"{origin}/"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            pytest.skip(f"chromium cannot start: {exc}")
        try:
            outcome = results.get(timeout=60)
        except queue.Empty:
            if proc.poll() is not None:
                pytest.skip(f"chromium exited ({proc.returncode}) before the page ran: "
                            f"{proc.stderr.read().decode(errors='replace')[-500:]}")
            raise AssertionError("the page did not report within 60 s")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    assert "error" not in outcome, outcome
    ok, big = outcome["ok"], outcome["big"]
    assert ok["status"] == 201 and "<Key>avatars/me.png</Key>" in ok["body"], ok
    got = s3.get_object(Bucket=bucket_name, Key="avatars/me.png")
    assert got["Body"].read() == bytes([137, 80, 78, 71, 1, 2, 3]) and got["ContentType"] == "image/png"
    assert ok["etag"] == got["ETag"]  # the exposed header was readable cross-origin
    assert big["status"] == 400 and "EntityTooLarge" in big["body"], big  # the error is readable too
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_name).get("Contents", [])]
    assert keys == ["avatars/me.png"]
