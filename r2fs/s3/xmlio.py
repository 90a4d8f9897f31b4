"""S3 XML: rendering responses and parsing the few request documents S3 takes.

Rendering builds strings from (tag, value) trees -- S3 responses are small
and flat, and this keeps element order exact. Parsing uses ElementTree after
refusing DTDs (no entity expansion tricks) and ignores the S3 namespace, so
documents with or without `xmlns` are accepted alike.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Iterable, Union
from xml.sax.saxutils import escape

from .errors import S3Error

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

Node = Union[tuple, None]  # (tag, text | list[Node]) ; None entries are skipped


def iso8601(ts: float) -> str:
    """S3's timestamp format in XML: 2006-02-03T16:45:09.000Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % int((ts % 1) * 1000)


def http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def _render(node: Node, out: list[str]) -> None:
    if node is None:
        return
    tag, value = node
    name = tag.split(" ", 1)[0]  # a tag may carry attributes: 'Grantee xsi:type="Group"'
    if isinstance(value, list):
        out.append(f"<{tag}>")
        for child in value:
            _render(child, out)
        out.append(f"</{name}>")
    elif value is None or value == "":
        out.append(f"<{tag}/>" if value == "" else "")
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"<{tag}>{escape(text)}</{name}>")


def document(root: str, children: Iterable[Node], *, namespace: bool = True) -> bytes:
    """A complete XML document with the S3 namespace on its root element."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    out.append(f'<{root} xmlns="{S3_NS}">' if namespace else f"<{root}>")
    for child in children:
        _render(child, out)
    out.append(f"</{root}>")
    return "".join(out).encode("utf-8")


def error_document(code: str, message: str, resource: str | None, request_id: str,
                   extra: dict[str, str]) -> bytes:
    children: list[Node] = [("Code", code), ("Message", message)]
    children += [(k, v) for k, v in extra.items()]
    if resource:
        children.append(("Resource", resource))
    children.append(("RequestId", request_id))
    return document("Error", children, namespace=False)


def parse(body: bytes) -> ET.Element:
    """Parse a request document with namespaces stripped; MalformedXML on anything odd."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error("MalformedXML", "DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None
    for elem in root.iter():
        if isinstance(elem.tag, str) and "}" in elem.tag:
            elem.tag = elem.tag.split("}", 1)[1]
    return root


def text(elem: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = elem.find(tag)
    if child is None:
        return default
    return child.text or ""


#: CompleteMultipartUpload's per-part checksum elements -> algorithm
PART_CHECKSUMS = {"ChecksumCRC32": "crc32", "ChecksumCRC32C": "crc32c", "ChecksumCRC64NVME": "crc64nvme",
                  "ChecksumSHA1": "sha1", "ChecksumSHA256": "sha256"}


#: algorithm -> the XML element that carries its value
CHECKSUM_TAGS = {algo: tag for tag, algo in PART_CHECKSUMS.items()}


def parse_complete_multipart(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """CompleteMultipartUpload -> [(part number, etag without quotes, {algorithm: checksum})]
    in document order."""
    root = parse(body)
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts = []
    for part in root.findall("Part"):
        number, etag = text(part, "PartNumber"), text(part, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag")
        sums = {algo: (text(part, tag) or "").strip() for tag, algo in PART_CHECKSUMS.items()
                if part.find(tag) is not None}
        parts.append((int(number), etag.strip().strip('"'), sums))
    if not parts:
        raise S3Error("MalformedXML", "CompleteMultipartUpload lists no parts")
    return parts


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """Delete (DeleteObjects) -> (keys, quiet)."""
    root = parse(body)
    if root.tag != "Delete":
        raise S3Error("MalformedXML")
    keys = []
    for obj in root.findall("Object"):
        key = text(obj, "Key")
        if key is None:
            raise S3Error("MalformedXML", "each Object needs a Key")
        keys.append(key)
    if not keys or len(keys) > 1000:
        raise S3Error("MalformedXML", "Delete takes 1 to 1000 objects")
    quiet = (text(root, "Quiet", "false") or "").strip().lower() == "true"
    return keys, quiet


def parse_location(body: bytes) -> str | None:
    """CreateBucketConfiguration -> LocationConstraint (None when absent or empty body)."""
    if not body.strip():
        return None
    root = parse(body)
    if root.tag != "CreateBucketConfiguration":
        raise S3Error("MalformedXML")
    value = text(root, "LocationConstraint")
    return value.strip() or None if value is not None else None


def parse_cors(body: bytes) -> list[dict]:
    """CORSConfiguration -> list of rules as plain dicts (stored in bucket settings)."""
    root = parse(body)
    if root.tag != "CORSConfiguration":
        raise S3Error("MalformedXML")
    rules = []
    for rule in root.findall("CORSRule"):
        r = {
            "id": text(rule, "ID"),
            "allowed_origins": [e.text or "" for e in rule.findall("AllowedOrigin")],
            "allowed_methods": [(e.text or "").upper() for e in rule.findall("AllowedMethod")],
            "allowed_headers": [e.text or "" for e in rule.findall("AllowedHeader")],
            "expose_headers": [e.text or "" for e in rule.findall("ExposeHeader")],
            "max_age": None,
        }
        age = text(rule, "MaxAgeSeconds")
        if age is not None:
            if not age.strip().isdigit():
                raise S3Error("MalformedXML", "MaxAgeSeconds must be a number")
            r["max_age"] = int(age)
        if not r["allowed_origins"] or not r["allowed_methods"]:
            raise S3Error("MalformedXML", "each CORSRule needs AllowedOrigin and AllowedMethod")
        bad = set(r["allowed_methods"]) - {"GET", "PUT", "POST", "DELETE", "HEAD"}
        if bad:
            raise S3Error("InvalidRequest", f"unsupported CORS method {sorted(bad)[0]}")
        rules.append(r)
    if not rules or len(rules) > 100:
        raise S3Error("MalformedXML", "CORSConfiguration takes 1 to 100 rules")
    return rules


def render_cors(rules: list[dict]) -> bytes:
    out = []
    for r in rules:
        children: list[Node] = [("ID", r.get("id"))] if r.get("id") else []
        children += [("AllowedOrigin", o) for o in r["allowed_origins"]]
        children += [("AllowedMethod", m) for m in r["allowed_methods"]]
        children += [("AllowedHeader", h) for h in r["allowed_headers"]]
        children += [("ExposeHeader", h) for h in r["expose_headers"]]
        if r.get("max_age") is not None:
            children.append(("MaxAgeSeconds", r["max_age"]))
        out.append(("CORSRule", children))
    return document("CORSConfiguration", out)
