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

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
IMAGE_ID_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


class PatchingError(Exception):
    """An error the user can act on; its text is the whole message shown."""


def aws_error_message(exc, action, subject=None):
    """Turn a botocore exception into 'action failed [for subject]: Code: message'."""
    where = f" for {subject}" if subject else ""
    try:
        err = exc.response.get("Error", {})
        detail = f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    except AttributeError:
        detail = str(exc)
    detail = " ".join(detail.split())  # AWS messages may span lines; keep it one line
    return f"{action} failed{where}: {detail}"


def is_aws_error(exc):
    return isinstance(exc, (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError))


def error_code(exc):
    try:
        return exc.response["Error"]["Code"]
    except (AttributeError, KeyError):
        return None


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


def exit_with(module, action, fn):
    """Run fn(module) and exit with its result; every error becomes one line, never a traceback.

    Errors that carry no instance detail are prefixed with `action` so the user knows what failed.
    """
    try:
        result = fn(module)
    except PatchingError as e:
        module.fail_json(msg=one_line(e))
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            module.fail_json(msg=one_line(aws_error_message(e, action)))
        module.fail_json(msg=one_line(f"{action} failed: {type(e).__name__}: {e}"))
    module.exit_json(**result)
