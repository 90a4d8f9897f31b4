"""THE one mapping from r2fs errors to S3 error codes, HTTP statuses and XML bodies.

Handlers raise `S3Error` for protocol-level problems and let engine errors
(`r2fs.engine.errors`) propagate; `to_s3_error` turns either into what the
client sees. Anything unexpected becomes InternalError (500) with the details
logged, never a traceback on the wire.
"""

from __future__ import annotations

from ..engine import errors as e

#: code -> (HTTP status, default message)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed"),
    "AuthorizationQueryParametersError": (400, "The presigned URL query parameters are malformed"),
    "BadDigest": (400, "The Content-MD5 or checksum you specified did not match what we received"),
    "BucketAlreadyOwnedByYou": (409, "The bucket you tried to create already exists, and you own it"),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size"),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size"),
    "ExpiredToken": (400, "The provided token has expired"),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length header"),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records"),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid"),
    "InvalidDigest": (400, "The Content-MD5 or checksum you specified is not valid"),
    "InvalidObjectState": (403, "The operation is not valid for the current state of the object"),
    "InvalidPart": (400, "One or more of the specified parts could not be found"),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order"),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidURI": (400, "Couldn't parse the specified URI"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema"),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource"),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header"),
    "MissingSecurityHeader": (400, "Your request is missing a required header"),
    "UnexpectedContent": (400, "This request does not support content"),
    "MalformedPOSTRequest": (400, "The body of your POST request is not well-formed multipart/form-data"),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions specified "
                                   "in the policy document"),
    "IncorrectNumberOfFilesInPostRequest": (400, "POST requires exactly one file upload per request"),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchKey": (404, "The specified key does not exist"),
    "NoSuchUpload": (404, "The specified multipart upload does not exist"),
    "NotImplemented": (501, "A header or operation you provided implies functionality that is not implemented"),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold"),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large"),
    "ServiceUnavailable": (503, "Please reduce your request rate"),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed"),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size"),
    "AccessForbidden": (403, "CORSResponse: This CORS request is not allowed"),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you provided"),
}

#: engine exception class -> S3 code (checked in MRO order, so subclasses win)
ENGINE_CODES: dict[type, str] = {
    e.InvalidBucketName: "InvalidBucketName",
    e.NoSuchBucket: "NoSuchBucket",
    e.BucketAlreadyExists: "BucketAlreadyOwnedByYou",
    e.BucketNotEmpty: "BucketNotEmpty",
    e.KeyTooLong: "KeyTooLongError",
    e.InvalidKey: "InvalidArgument",
    e.NoSuchKey: "NoSuchKey",
    e.IfMatchOnMissingKey: "NoSuchKey",
    e.KeyExists: "PreconditionFailed",
    e.PreconditionFailed: "PreconditionFailed",
    e.NotModified: "NotModified",
    e.InvalidRange: "InvalidRange",
    e.BadDigest: "BadDigest",
    e.EntityTooLarge: "EntityTooLarge",
    e.EntityTooSmall: "EntityTooSmall",
    e.NoSuchUpload: "NoSuchUpload",
    e.InvalidPart: "InvalidPart",
    e.InvalidPartOrder: "InvalidPartOrder",
    e.DataUnavailable: "InternalError",
    e.ChunkMissing: "ServiceUnavailable",
}


class S3Error(Exception):
    """An S3 error response: code, message, and optional extra XML fields / headers."""

    def __init__(self, code: str, message: str | None = None, *,
                 resource: str | None = None, extra: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        status, default = CODES.get(code, (400, code))
        super().__init__(message or default)
        self.code = code
        self.status = status
        self.message = message or default
        self.resource = resource
        self.extra = extra or {}
        self.headers = headers or {}


def to_s3_error(exc: BaseException) -> S3Error:
    """Map any exception raised while serving a request to the S3Error to send."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, e.R2fsError):
        for cls in type(exc).__mro__:
            code = ENGINE_CODES.get(cls)
            if code:
                message = str(exc) or None
                if code == "InternalError":
                    message = f"data unavailable: {exc}"
                return S3Error(code, message)
        return S3Error("InternalError", str(exc) or None)
    return S3Error("InternalError")
