// The classic upload flow with the AWS JS SDK v3 against the r2fs gateway.
// Endpoint and keys come from the environment (set by tests/s3/test_js_sdk.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command, DeleteObjectCommand,
} from "@aws-sdk/client-s3";

const { R2FS_ENDPOINT, R2FS_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY } = process.env;

const client = new S3Client({
  region: "auto",
  endpoint: R2FS_ENDPOINT,
  forcePathStyle: true,
  credentials: { accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: AWS_SECRET_ACCESS_KEY },
});

// Record what goes on the wire, to check which payload modes were exercised.
const sent = [];
client.middlewareStack.add((next) => async (args) => {
  sent.push({ ...args.request.headers });
  return next(args);
}, { step: "finalizeRequest", priority: "low", name: "recordHeaders" });

async function fetchBytes(key) {
  const got = await client.send(new GetObjectCommand({ Bucket: R2FS_BUCKET, Key: key }));
  return { got, bytes: Buffer.from(await got.Body.transformToByteArray()) };
}

test("PutObject with a Buffer body, then GetObject returns the same bytes", async () => {
  const body = randomBytes(1024 * 1024 + 17);
  const put = await client.send(new PutObjectCommand({
    Bucket: R2FS_BUCKET, Key: "js/buffer.bin", Body: body, ContentType: "application/x-js-test",
  }));
  assert.equal(put.ETag, `"${createHash("md5").update(body).digest("hex")}"`);
  const { got, bytes } = await fetchBytes("js/buffer.bin");
  assert.equal(got.ContentType, "application/x-js-test");
  assert.ok(bytes.equals(body), "bytes differ");
});

test("PutObject with a stream body (aws-chunked with a checksum trailer)", async () => {
  const body = randomBytes(300 * 1024);
  await client.send(new PutObjectCommand({
    Bucket: R2FS_BUCKET, Key: "js/stream.bin", Body: Readable.from([body.subarray(0, 100000), body.subarray(100000)]),
    ContentLength: body.length,
  }));
  const headers = sent[sent.length - 1];
  const { bytes } = await fetchBytes("js/stream.bin");
  assert.ok(bytes.equals(body), "bytes differ");
  // Guard: the SDK's default for streams is aws-chunked with a trailing CRC.
  assert.equal(headers["x-amz-content-sha256"], "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
  assert.match(headers["x-amz-trailer"], /^x-amz-checksum-/);
});

test("ListObjectsV2 and DeleteObject", async () => {
  const list = await client.send(new ListObjectsV2Command({ Bucket: R2FS_BUCKET, Prefix: "js/" }));
  assert.deepEqual(list.Contents.map((o) => o.Key), ["js/buffer.bin", "js/stream.bin"]);
  await client.send(new DeleteObjectCommand({ Bucket: R2FS_BUCKET, Key: "js/buffer.bin" }));
  await client.send(new DeleteObjectCommand({ Bucket: R2FS_BUCKET, Key: "js/stream.bin" }));
  await assert.rejects(fetchBytes("js/buffer.bin"), (err) => err.name === "NoSuchKey");
});
