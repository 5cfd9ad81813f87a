"""Error bodies the simulator writes itself (not through moto's serializer) for services that moved off the query protocol.

CloudWatch: the botocore model (cloudwatch 2010-08-01) lists "protocols": ["smithy-rpc-v2-cbor", "json", "query"] with
"awsQueryCompatible"; botocore speaks AWS JSON 1.0 to it (its first supported protocol). A service with the
aws.protocols#awsQueryCompatible trait (Smithy, "AWS protocols": awsQueryCompatible) keeps the error codes of its query
days in the header `x-amzn-query-error: <Code>;<Sender|Receiver>`, which botocore reports as Error.Code (the body's
__type becomes Error.QueryErrorCode). Without that header a JSON error reaches boto3 with the JSON name
(AccessDeniedException, ...) where CloudWatch callers get the query code (AccessDenied, Throttling, ...).
"""
from __future__ import annotations

import json
import uuid

QUERY_COMPATIBLE = frozenset(("cloudwatch",))
# query code -> the __type of the JSON body (AWS JSON 1.0 common errors: the names JSON-protocol services use).
_JSON_TYPES = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "ExpiredToken": "ExpiredTokenException",
    "Throttling": "ThrottlingException",
}


def query_compatible_error(start_response, status: str, code: str, message: str, fault: str = "Sender") -> list[bytes]:
    """The AWS JSON 1.0 error of an awsQueryCompatible service, with its query code in x-amzn-query-error."""
    request_id = str(uuid.uuid4())
    body = json.dumps({"__type": _JSON_TYPES.get(code, code), "message": message}).encode()
    start_response(status, [
        ("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id),
        ("x-amzn-query-error", f"{code};{fault}"), ("Content-Length", str(len(body))),
    ])
    return [body]
