"""WSGI middleware around moto's app: accounting, throttling and the /_sim control endpoints."""
from __future__ import annotations

import json
import random
import re
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs

from . import iam, state
from .protocols import QUERY_COMPATIBLE, query_compatible_error

_CRED_RE = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")
_AKID_RE = re.compile(r"<AccessKeyId>([^<]+)</AccessKeyId>")
_EXPIRATION_RE = re.compile(r"<Expiration>[^<]*</Expiration>")
# STS API reference, AssumeRole: DurationSeconds 900..43200, default 3600 (the role's maximum session duration caps it).
ASSUME_ROLE_DURATION = (900, 43200, 3600)
# IAM user guide, "Methods to assume a role" / "Role chaining": a role assumed with assumed-role credentials gets at most
# one hour; a longer DurationSeconds fails.
ROLE_CHAINING_MAX_S = 3600
# Access keys with this prefix are refused as AWS refuses unknown or revoked keys (tests of invalid credentials).
INVALID_KEY_PREFIX = "AKIAINVALID"
_AUTH_ERRORS = {  # service -> (HTTP status, code, message, protocol)
    "ec2": ("401 Unauthorized", "AuthFailure", "AWS was not able to validate the provided access credentials", "ec2"),
    "sts": ("403 Forbidden", "InvalidClientTokenId", "The security token included in the request is invalid.", "query"),
    "iam": ("403 Forbidden", "InvalidClientTokenId", "The security token included in the request is invalid.", "query"),
    "s3": ("403 Forbidden", "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", "s3"),
    "elasticloadbalancing": ("403 Forbidden", "InvalidClientTokenId", "The security token included in the request is invalid.", "query"),
    "autoscaling": ("403 Forbidden", "InvalidClientTokenId", "The security token included in the request is invalid.", "query"),
    # CloudWatch: its query code (InvalidClientTokenId) in x-amzn-query-error (awsQueryCompatible, protocols.py).
    "cloudwatch": ("403 Forbidden", "InvalidClientTokenId", "The security token included in the request is invalid.", "query-json"),
}
# A call signed with an expired temporary key: EC2 API "Error codes" (RequestExpired: "... the credentials have
# expired"), the common errors of JSON services such as SSM (ExpiredTokenException), STS/IAM (ExpiredToken), S3.
_EXPIRED_ERRORS = {  # service -> (HTTP status, code, message, protocol)
    "ec2": ("400 Bad Request", "RequestExpired", "Request has expired.", "ec2"),
    "sts": ("403 Forbidden", "ExpiredToken", "The security token included in the request is expired", "query"),
    "iam": ("403 Forbidden", "ExpiredToken", "The security token included in the request is expired", "query"),
    "s3": ("400 Bad Request", "ExpiredToken", "The provided token has expired.", "s3"),
    "elasticloadbalancing": ("403 Forbidden", "ExpiredToken", "The security token included in the request is expired", "query"),
    "autoscaling": ("403 Forbidden", "ExpiredToken", "The security token included in the request is expired", "query"),
    "cloudwatch": ("403 Forbidden", "ExpiredToken", "The security token included in the request is expired", "query-json"),
}
_EXPIRED_JSON = ("403 Forbidden", "ExpiredTokenException", "The security token included in the request is expired", "json")
_S3_SUBRESOURCES = ("tagging", "versioning", "policy", "acl", "lifecycle", "encryption", "location", "uploads", "delete")


def _role_max_session(role_arn: str, akid: str | None) -> float:
    """The role's MaxSessionDuration (IAM API reference, Role: 3600..43200, default 3600): the sim's IAM role when it
    holds one, else sts_role_max_session_s."""
    parts = role_arn.split(":")
    if len(parts) == 6 and parts[2] == "iam":
        from moto.iam.models import iam_backends  # pylint: disable=import-outside-toplevel
        if parts[4] in iam_backends:  # dict membership: does not create the account's backend
            role = next((r for r in iam_backends[parts[4]]["global"].get_roles() if r.arn == role_arn), None)
            if role is not None:
                return float(role.max_session_duration or 3600)
    return state.ACCOUNTING.setting("sts_role_max_session_s", akid)


def _s3_action(method: str, path: str, query: dict) -> str:
    parts = [p for p in path.split("/") if p]
    sub = next((s for s in _S3_SUBRESOURCES if s in query), "")
    if not parts:
        return "ListBuckets"
    if method == "POST" and sub == "delete":
        return "DeleteObjects"
    obj = len(parts) > 1
    suffix = sub.capitalize() if sub and sub != "location" else ("Location" if sub else "")
    if method == "GET":
        if obj:
            return "GetObject" + suffix
        if sub:
            return "GetBucket" + suffix
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if obj else "HeadBucket"
    if method == "PUT":
        if obj:
            return "CopyObject" if "x-amz-copy-source" in query else "PutObject" + suffix
        return "PutBucket" + suffix if sub else "CreateBucket"
    if method == "DELETE":
        return ("DeleteObject" if obj else "DeleteBucket") + suffix
    if method == "POST" and obj:
        return "CompleteMultipartUpload" if "uploadId" in query else "CreateMultipartUpload"
    return method.capitalize() + ("Object" if obj else "Bucket")


def _json(start_response, status: str, payload) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class SimMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/"):
            return self._control(environ, start_response, path)
        service, akid = self._credential(environ)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if service in ("ec2", "sts", "iam", "elasticloadbalancing", "autoscaling") or "Action" in query:  # query protocol
            body = iam.buffer_body(environ)
            form = parse_qs(body.decode("utf-8", "replace")) if body else {}
            action = (form.get("Action") or query.get("Action") or ["Unknown"])[0]
        elif service == "s3":
            action = _s3_action(environ.get("REQUEST_METHOD", "GET"), path, query)
        else:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            # smithy-rpc-v2-cbor (CloudWatch in botocore >= 1.38): POST /service/<name>/operation/<Action>, no target header.
            action = target.rpartition(".")[2] or (path.rpartition("/operation/")[2] if "/operation/" in path else "") or "Unknown"
        # CloudWatch signs as "monitoring"; IAM actions and the sim's stats use the prefix "cloudwatch" (Service
        # Authorization Reference, "Actions, resources, and condition keys for Amazon CloudWatch").
        service = {"monitoring": "cloudwatch"}.get(service, service) or "unknown"
        state.ACCOUNTING.record(akid, f"{service}:{action}")
        state.set_current_key(akid)

        if akid and akid.startswith(INVALID_KEY_PREFIX):
            return self._auth_failure(service, start_response)
        if state.ACCOUNTING.session_expired(akid):
            return self._auth_failure(service, start_response, _EXPIRED_ERRORS.get(service, _EXPIRED_JSON))
        rate = state.ACCOUNTING.setting("throttle_rate", akid)
        if rate > 0 and service in ("ec2", "ssm", "cloudwatch") and random.random() < rate:
            state.ACCOUNTING.record_throttle(akid)
            return self._throttle(service, start_response)
        denied = iam.check_request(environ, service, action, akid, start_response)  # only while an iam_policy is set
        if denied is not None:
            return denied
        if service == "sts" and action == "AssumeRole":
            return self._track_assume_role(environ, start_response, akid, form)
        return self.app(environ, start_response)

    @staticmethod
    def _credential(environ) -> tuple[str | None, str | None]:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = _CRED_RE.search(auth)
        if match:
            return match.group(2), match.group(1)
        cred = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential")
        if cred:
            parts = cred[0].split("/")
            return (parts[3] if len(parts) > 3 else None), parts[0]
        return None, None

    @staticmethod
    def _throttle(service: str, start_response) -> list[bytes]:
        # Exact AWS error shapes, so botocore's retry handlers classify them as throttling.
        if service in QUERY_COMPATIBLE:
            # CloudWatch's throttling code is Throttling (HTTP 400; CloudWatch API reference, "Common Errors" of the
            # query API), carried in x-amzn-query-error; botocore's standard retry mode counts it as throttling.
            return query_compatible_error(start_response, "400 Bad Request", "Throttling", "Rate exceeded")
        request_id = str(uuid.uuid4())
        if service == "ec2":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                f"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
            ).encode()
            start_response("503 Service Unavailable", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
            return [body]
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        start_response("400 Bad Request", [
            ("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", "ThrottlingException"),
        ])
        return [body]

    @staticmethod
    def _auth_failure(service: str, start_response, error: tuple | None = None) -> list[bytes]:
        """The error shape each protocol uses for credentials AWS does not know (or, given `error`, no longer accepts)."""
        status, code, message, protocol = error or _AUTH_ERRORS.get(
            service, ("400 Bad Request", "UnrecognizedClientException", "The security token included in the request is invalid.", "json"))
        if protocol == "query-json":
            return query_compatible_error(start_response, status, code, message)
        request_id = str(uuid.uuid4())
        if protocol == "json":
            body = json.dumps({"__type": code, "message": message}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)]
        elif protocol == "ec2":
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>'
                    f"</Error></Errors><RequestID>{request_id}</RequestID></Response>").encode()
            headers = [("Content-Type", "text/xml")]
        elif protocol == "s3":
            body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>".encode()
            headers = [("Content-Type", "application/xml")]
        else:
            body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>'
                    f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
            headers = [("Content-Type", "text/xml")]
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]

    def _track_assume_role(self, environ, start_response, parent: str | None, form: dict):
        """Let moto issue the session, then record its parent key and when it ends (DurationSeconds, capped by sts_session_s)."""
        low, high, default = ASSUME_ROLE_DURATION
        try:
            duration = int((form.get("DurationSeconds") or [default])[0])
        except ValueError:
            duration = -1
        if not low <= duration <= high:
            return self._validation_error(start_response, f"DurationSeconds must be between {low} and {high}")
        # STS API reference, AssumeRole DurationSeconds: above the role's MaxSessionDuration fails with ValidationError.
        if duration > _role_max_session((form.get("RoleArn") or [""])[0], parent):
            return self._validation_error(
                start_response, "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        if parent in state.ACCOUNTING.expiry and duration > ROLE_CHAINING_MAX_S:  # the caller's key is an assumed role's
            return self._validation_error(
                start_response, "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
        cap = state.ACCOUNTING.setting("sts_session_s", parent)
        ends = state.now() + (min(duration, cap) if cap > 0 else duration)
        captured = {}

        def _start(status, headers, exc_info=None):
            captured["args"] = (status, headers, exc_info)
            return lambda data: None

        chunks = list(self.app(environ, _start))
        body = b"".join(chunks)
        match = _AKID_RE.search(body.decode("utf-8", "replace"))
        if match:
            with state._LOCK:  # pylint: disable=protected-access
                if parent:
                    state.ACCOUNTING.parents[match.group(1)] = parent
                state.ACCOUNTING.expiry[match.group(1)] = ends
            # Credentials.Expiration is when the session really ends, so SDKs refresh in time (STS API reference).
            stamp = datetime.fromtimestamp(ends, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body = _EXPIRATION_RE.sub(f"<Expiration>{stamp}</Expiration>", body.decode("utf-8")).encode()
        status, headers, exc_info = captured["args"]
        headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(status, headers, exc_info)
        return [body]

    @staticmethod
    def _validation_error(start_response, message: str) -> list[bytes]:
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code><Message>{message}</Message></Error>"
                f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
        start_response("400 Bad Request", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _control(environ, start_response, path: str) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        key = (query.get("key") or [None])[0]
        acc = state.ACCOUNTING
        if path == "/_sim/health":
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/_sim/stats" and method == "GET":
            return _json(start_response, "200 OK", acc.stats(key))
        if path == "/_sim/stats/reset" and method == "POST":
            acc.reset(key)
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/_sim/authz" and method == "GET":  # the request contexts authorised (and refused) under iam_policy
            return _json(start_response, "200 OK", iam.recorded(key))
        if path == "/_sim/authz/reset" and method == "POST":
            iam.reset_recorded(key)
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/_sim/config":
            if method == "GET":
                return _json(start_response, "200 OK", dict(acc.key_config.get(acc.root_key(key), {})) if key else dict(acc.config))
            if method == "POST":
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    payload = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
                    key = payload.pop("key", None) or key
                    acc.set_config(payload, key)
                except (ValueError, TypeError) as exc:
                    return _json(start_response, "400 Bad Request", {"ok": False, "error": str(exc)})
                return _json(start_response, "200 OK", dict(acc.config))
        if path == "/_sim/alarm" and method == "POST":  # schedule a SetAlarmState at a simulated time (cloudwatch.py)
            from . import cloudwatch  # pylint: disable=import-outside-toplevel
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                payload = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
                return _json(start_response, "200 OK", cloudwatch.schedule(payload))
            except (ValueError, TypeError) as exc:
                return _json(start_response, "400 Bad Request", {"ok": False, "error": str(exc)})
        return _json(start_response, "404 Not Found", {"ok": False, "error": f"no such endpoint {method} {path}"})
