"""CORS: matching requests against a bucket's rules (stored in its settings),
answering OPTIONS preflights and decorating actual responses."""

from __future__ import annotations

import fnmatch

from .errors import S3Error
from .http import Request, Response


def _match(pattern: str, value: str) -> bool:
    return pattern == "*" or fnmatch.fnmatchcase(value.lower(), pattern.lower())


def find_rule(rules: list[dict], origin: str, method: str, headers: list[str]) -> dict | None:
    for rule in rules:
        if not any(_match(o, origin) for o in rule["allowed_origins"]):
            continue
        if method.upper() not in rule["allowed_methods"]:
            continue
        if all(any(_match(a, h) for a in rule["allowed_headers"]) for h in headers):
            return rule
    return None


def _allow_origin(rule: dict, origin: str) -> str:
    return "*" if rule["allowed_origins"] == ["*"] else origin


def preflight(req: Request, rules: list[dict] | None) -> Response:
    origin = req.header("origin")
    method = req.header("access-control-request-method")
    if not origin or not method:
        raise S3Error("InvalidRequest", "a CORS preflight needs Origin and Access-Control-Request-Method")
    requested = [h.strip().lower() for h in (req.header("access-control-request-headers") or "").split(",")
                 if h.strip()]
    rule = find_rule(rules or [], origin, method, requested)
    if rule is None:
        raise S3Error("AccessForbidden")
    resp = Response()
    resp.set("Access-Control-Allow-Origin", _allow_origin(rule, origin))
    resp.set("Access-Control-Allow-Methods", ", ".join(rule["allowed_methods"]))
    if requested:
        resp.set("Access-Control-Allow-Headers", ", ".join(requested))
    if rule.get("expose_headers"):
        resp.set("Access-Control-Expose-Headers", ", ".join(rule["expose_headers"]))
    if rule.get("max_age") is not None:
        resp.set("Access-Control-Max-Age", str(rule["max_age"]))
    resp.set("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")
    return resp


def decorate(req: Request, rules: list[dict] | None, headers: list[tuple[str, str]]) -> None:
    """Add CORS headers to an actual (non-preflight) response when a rule matches."""
    origin = req.header("origin")
    if not origin or not rules:
        return
    rule = find_rule(rules, origin, req.method, [])
    if rule is None:
        return
    headers.append(("Access-Control-Allow-Origin", _allow_origin(rule, origin)))
    headers.append(("Access-Control-Allow-Methods", ", ".join(rule["allowed_methods"])))
    if rule.get("expose_headers"):
        headers.append(("Access-Control-Expose-Headers", ", ".join(rule["expose_headers"])))
    if rule.get("max_age") is not None:
        headers.append(("Access-Control-Max-Age", str(rule["max_age"])))
    headers.append(("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"))
