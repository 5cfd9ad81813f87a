# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of the modules that send SSM Run Command commands through the batched runner.
    DOCUMENTATION = r"""
options:
  run_id:
    description:
      - Identifier of the patching run. Every command's C(Comment) is C(cms-patching <run-id> <step> <token>), the audit trail
        in the SSM command history; the short per-command token finds a command again when the answer to C(SendCommand) was
        lost, so that it is never sent twice (C(SendCommand) has no idempotency token of its own).
      - 1 to 64 letters, digits, C(.), C(_), C(:) or C(-). Generated (C(run-<UTC time>-<random>)) when not given.
    type: str
  max_concurrency:
    description:
      - SendCommand C(MaxConcurrency) of each command (a count, or a percentage of its at most 50 instances).
    type: str
    default: 100%
  max_errors:
    description:
      - SendCommand C(MaxErrors). The default V(100%) means SSM never stops a batch on its own, so the failure policy stays
        with the play (C(max_fail_percentage)). Invocations SSM stops because of it end with outcome V(terminated).
    type: str
    default: 100%
  delivery_timeout:
    description:
      - Seconds SSM may take to deliver the command to an instance (SendCommand C(TimeoutSeconds), 30 to 2592000).
        An instance not reached in time ends V(delivery_timed_out); nothing ran on it.
    type: int
    default: 600
  output_s3_bucket_name:
    description:
      - S3 bucket for the full command output (SendCommand C(OutputS3BucketName)).
    type: str
  output_s3_key_prefix:
    description:
      - Key prefix for the output in O(output_s3_bucket_name).
    type: str
  cloudwatch_output:
    description:
      - Send the command output to CloudWatch Logs (SendCommand C(CloudWatchOutputConfig)).
    type: dict
    suboptions:
      enabled:
        description: Whether CloudWatch output is on.
        type: bool
        default: true
      log_group_name:
        description: Log group; SSM uses C(/aws/ssm/<document name>) when not set.
        type: str
  wait:
    description:
      - Wait for every invocation to end and report its outcome. With V(false) the module returns right after SendCommand,
        with outcome V(sent) and the command ids.
    type: bool
    default: true
  poll_interval:
    description:
      - Seconds between two polls. Each poll is one C(ListCommands) for all the open commands (50 commands a page), never one
        call per instance; a command's C(ListCommandInvocations) follows once it has finished.
    type: float
    default: 10.0
"""
