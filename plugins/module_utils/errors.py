# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-line errors: every AWS or input problem becomes a short sentence, never a traceback."""

from __future__ import annotations

import re

try:
    import botocore.exceptions
except ImportError:  # handled by AnsibleAWSModule's own boto3 check
    pass

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
IMAGE_ID_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


class PatchingError(Exception):
    """An error the user can act on; its text is the whole message shown."""


def aws_error_message(exc, action, subject=None):
    """Turn a botocore exception into 'action failed [for subject]: Code: message'."""
    where = f" for {subject}" if subject else ""
    if isinstance(exc, AwsCallError):  # raised by AwsErrorHandler: describe the AWS error it wraps
        exc = exc.exception or exc
    try:
        err = exc.response.get("Error", {})
        detail = f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    except AttributeError:
        detail = str(exc)
    detail = " ".join(detail.split())  # AWS messages may span lines; keep it one line
    return f"{action} failed{where}: {detail}"


def is_aws_error(exc):
    return isinstance(exc, (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, AwsCallError))


def error_code(exc):
    """The AWS error code of a botocore error (or of the one an AwsCallError wraps), else None."""
    exc = getattr(exc, "exception", None) or exc
    try:
        return exc.response["Error"]["Code"]
    except (AttributeError, KeyError, TypeError):
        return None


class AwsCallError(AnsibleAWSError, PatchingError):
    """A failed AWS call, raised by AwsErrorHandler. str() is the one line '<action> failed: <Code>: <message>'."""

    def __init__(self, message=None, exception=None, **kwargs):
        super().__init__(message=message, exception=exception, **kwargs)
        # amazon.aws's handlers say "Failed to <description>"; our descriptions are the action (e.g. ec2:CreateImage).
        self.action = re.sub(r"^(Failed to|Timeout trying to) ", "", message or "")

    @property
    def code(self):
        return error_code(self.exception)

    def line(self, subject=None):
        """The one-line message, naming the instance or resource it was about."""
        return aws_error_message(self.exception, self.action, subject) if self.exception else self.action

    def __str__(self):
        return self.line()


class AwsErrorHandler(AWSErrorHandler):
    """amazon.aws's error-handler pattern (as its ec2 helpers use it) with this collection's one-line messages.

    `@AwsErrorHandler.common_error_handler("ec2:CreateImage")` on a function that makes the call turns its botocore
    errors into AwsCallError, which keeps the AWS error code (`code`) for the per-instance result.
    """

    _CUSTOM_EXCEPTION = AwsCallError


def validate_instance_ids(instance_ids):
    """Reject malformed ids before any AWS call, naming every bad one."""
    bad = [i for i in instance_ids if not isinstance(i, str) or not INSTANCE_ID_RE.match(i)]
    if bad:
        raise PatchingError(f"malformed instance id(s): {', '.join(map(str, bad))} (expected i- followed by 8 or 17 hex digits)")
    dupes = sorted({i for i in instance_ids if instance_ids.count(i) > 1})
    if dupes:
        raise PatchingError(f"duplicate instance id(s): {', '.join(dupes)}")


def require_positive(params, names):
    """Timeouts and intervals must be > 0: zero would never wait, a negative one is a typo."""
    for name in names:
        value = params.get(name)
        if value is not None and value <= 0:
            raise PatchingError(f"{name} must be greater than 0, got {value}")


def one_line(text, limit=600):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# The option of every fleet module whose result lists instances (documented in the cms.patching.results fragment).
RESULT_ARGS = dict(fail_on_no_success=dict(type="bool", default=True))
NO_SUCCESS_IDS_SHOWN = 5


def no_success_message(entries, field, succeeded):
    """None when at least one entry's `field` is in `succeeded`; else one line summing up why none succeeded.

    e.g. "no instance succeeded: 2 not_found (i-1, i-2), 1 undeliverable (i-3); first error: instance i-1 not found in EC2"
    """
    entries = list(entries or [])
    if not entries or any(e.get(field) in succeeded for e in entries):
        return None
    groups = {}
    for entry in entries:
        groups.setdefault(entry.get(field) or "unknown", []).append(entry.get("instance_id") or "?")
    parts = []
    for name, ids in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = ", ".join(ids[:NO_SUCCESS_IDS_SHOWN]) + (f", +{len(ids) - NO_SUCCESS_IDS_SHOWN} more" if len(ids) > NO_SUCCESS_IDS_SHOWN else "")
        parts.append(f"{len(ids)} {name} ({shown})")
    first = next((e["error"] for e in entries if e.get("error")), None)
    return "no instance succeeded: " + ", ".join(parts) + (f"; first error: {first}" if first else "")


def exit_with(module, action, fn, judge=None):
    """Run fn(module) and exit with its result; every error becomes one line, never a traceback.

    Errors that carry no instance detail are prefixed with `action` so the user knows what failed; an AWS error keeps
    its code in `error_code`. judge(result) -> None or the one line that fails a call in which no instance succeeded
    (unless the module's fail_on_no_success is false); the per-instance results stay in the failed result.
    """
    try:
        result = fn(module)
    except AwsCallError as e:
        module.fail_json(msg=one_line(e), error_code=e.code)
    except PatchingError as e:
        module.fail_json(msg=one_line(e))
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            module.fail_json(msg=one_line(aws_error_message(e, action)), error_code=error_code(e))
        module.fail_json(msg=one_line(f"{action} failed: {type(e).__name__}: {e}"))
    failure = judge(result) if judge and module.params.get("fail_on_no_success", True) else None
    if failure:
        module.fail_json(msg=one_line(failure), **result)
    module.exit_json(**result)
