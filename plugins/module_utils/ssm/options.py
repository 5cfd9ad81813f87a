# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that send SSM commands, and their validation (before any AWS call)."""

from __future__ import annotations

import re

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, require_positive

# Argument spec shared by ssm_patch_run and ssm_command_run (documented in the cms.patching.ssm_command fragment).
RUNNER_ARGS = dict(
    run_id=dict(type="str"),
    max_concurrency=dict(type="str", default="100%"),
    max_errors=dict(type="str", default="100%"),
    delivery_timeout=dict(type="int", default=600),
    output_s3_bucket_name=dict(type="str"),
    output_s3_key_prefix=dict(type="str", no_log=False),
    cloudwatch_output=dict(type="dict", options=dict(
        enabled=dict(type="bool", default=True),
        log_group_name=dict(type="str"),
    )),
    wait=dict(type="bool", default=True),
    poll_interval=dict(type="float", default=10.0),
)

STEP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")
# AWS's own patterns for SendCommand MaxConcurrency and MaxErrors.
MAX_CONCURRENCY_RE = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS_RE = re.compile(r"^([1-9][0-9]*|0|[1-9][0-9]%|[0-9]%|100%)$")
LOG_GROUP_RE = re.compile(r"^[\w./#-]{1,512}$")
DELIVERY_TIMEOUT_RANGE = (30, 2592000)  # SendCommand TimeoutSeconds


def resolve_run_id(value):
    """The run id is one word of the Comment `cms-patching <run-id> <step>` (max 100 characters)."""
    return run_ids.resolve(value)


def validate_step(step):
    if not isinstance(step, str) or not STEP_RE.match(step):
        raise PatchingError(f"invalid step {step!r}: use a lower-case word of at most 20 letters, digits, '_' or '-' (e.g. precheck, restart, health)")


def validate_runner_options(params, timeouts=("execution_timeout", "delivery_timeout", "poll_interval")):
    """Everything about sending and waiting that AWS would refuse, or that would make the wait meaningless."""
    require_positive(params, timeouts)
    low, high = DELIVERY_TIMEOUT_RANGE
    if not low <= params["delivery_timeout"] <= high:
        raise PatchingError(f"delivery_timeout must be between {low} and {high} seconds, got {params['delivery_timeout']}")
    if not MAX_CONCURRENCY_RE.match(str(params["max_concurrency"])):
        raise PatchingError(f"invalid max_concurrency {params['max_concurrency']!r}: a count >= 1 or a percentage 1%-100%")
    if not MAX_ERRORS_RE.match(str(params["max_errors"])):
        raise PatchingError(f"invalid max_errors {params['max_errors']!r}: a count >= 0 or a percentage 0%-100%")
    if params.get("output_s3_key_prefix") and not params.get("output_s3_bucket_name"):
        raise PatchingError("output_s3_key_prefix needs output_s3_bucket_name")
    cloudwatch = params.get("cloudwatch_output") or {}
    group = cloudwatch.get("log_group_name")
    if group and not LOG_GROUP_RE.match(group):
        raise PatchingError(f"invalid cloudwatch_output.log_group_name {group!r}")


def request_options(params):
    """CommandRequest keyword arguments taken from the shared options."""
    cloudwatch = params.get("cloudwatch_output") or {}
    return dict(
        delivery_timeout=params["delivery_timeout"],
        execution_timeout=params["execution_timeout"],
        max_concurrency=str(params["max_concurrency"]),
        max_errors=str(params["max_errors"]),
        output_s3_bucket_name=params.get("output_s3_bucket_name"),
        output_s3_key_prefix=params.get("output_s3_key_prefix"),
        cloudwatch_enabled=bool(cloudwatch.get("enabled")),
        cloudwatch_log_group=cloudwatch.get("log_group_name"),
    )
