# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Batched SSM Run Command: send to at most 50 instances per command, poll all open commands at once, classify per instance.

Each poll is one ListCommands (ExecutionStage=Executing, since the first send, up to 50 commands a page); a command's
invocations are listed (with output) only once it has left that stage, or when its deadline needs per-instance states.
Time is read through injectable `clock`/`sleep` so the deadline logic is unit-testable without waiting.
"""

from __future__ import annotations

import time
from datetime import timedelta, timezone
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ansible_collections.cms.patching.plugins.module_utils.batching import SSM_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.models import OperationResult
from ansible_collections.cms.patching.plugins.module_utils.ssm_status import (
    classify, exit_code_failure, is_pending_delivery, output_excerpt,
)

# After our own CancelCommand, how long invocations get to report Cancelled before we stop waiting.
CANCEL_GRACE_S = 60.0


@dataclass
class CommandRequest:
    """One logical command (same document and parameters) for any number of instances."""

    document: str
    instance_ids: List[str]
    step: str
    parameters: Dict[str, List[str]] = field(default_factory=dict)
    delivery_timeout: int = 600
    execution_timeout: float = 3600
    max_concurrency: str = "100%"
    max_errors: str = "100%"
    output_s3_bucket_name: Optional[str] = None
    output_s3_key_prefix: Optional[str] = None
    cloudwatch_log_group: Optional[str] = None
    cloudwatch_enabled: bool = False
    strict_exit_code: bool = False  # shell documents: any plugin exit code != 0 fails the instance


@dataclass
class SentCommand:
    """One SendCommand (<= 50 instances) and what polling has learnt about it."""

    request: CommandRequest
    instance_ids: List[str]
    command_id: Optional[str] = None
    requested_at: object = None  # AWS's RequestedDateTime, for freshness checks on AWS's own clock
    deadline: float = 0.0
    send_error: Optional[str] = None
    states: Dict[str, tuple] = field(default_factory=dict)  # instance id -> (Status, StatusDetails)
    cancelled_at: Optional[float] = None
    cancelled: Dict[str, Optional[str]] = field(default_factory=dict)  # instance id -> Status when we cancelled it
    last_error: Optional[str] = None  # why the latest read of this command failed (None once a read succeeds)
    cancel_error: Optional[str] = None  # why our own CancelCommand failed: then no message may say it was sent

    def open_ids(self):
        return [i for i in self.instance_ids if classify(*self.states.get(i, (None, None))) is None]


class SsmRunner:
    """Runs CommandRequests for a run (RunConfig): SendCommand per 50 ids, one ListCommands per poll."""

    def __init__(self, ssm, config, clock=time.monotonic, sleep=time.sleep, cancel_grace=CANCEL_GRACE_S):
        self.ssm = ssm
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.cancel_grace = cancel_grace
        self.sent = []

    def run(self, requests):
        """Send every request (unless check mode) and, when config.wait, wait for every invocation; results by id."""
        if self.config.check_mode:
            return {i: OperationResult(i, outcome="would_run") for r in requests for i in r.instance_ids}
        commands = [c for r in requests for c in self.send(r)]
        if not self.config.wait:
            return {i: self._unwaited(c, i) for c in commands for i in c.instance_ids}
        return self.wait(commands)

    def send(self, request):
        """One SendCommand per chunk of <= 50 ids. A refused chunk is recorded, never raised: other chunks may be running."""
        commands = []
        for ids in chunked(request.instance_ids, SSM_BATCH):
            cmd = SentCommand(request, ids)
            try:
                response = self.ssm.send_command(aws_retry=True, **send_command_params(request, ids, self.config.comment(request.step)))
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                cmd.send_error = aws_error_message(e, "ssm:SendCommand", f"{len(ids)} instance(s)")
            else:
                cmd.command_id = response["Command"]["CommandId"]
                cmd.requested_at = response["Command"].get("RequestedDateTime")
                cmd.deadline = self.clock() + request.execution_timeout
            commands.append(cmd)
            self.sent.append(cmd)
        return commands

    def wait(self, commands):
        """Poll the open commands once per poll_interval until all are terminal; enforce each one's deadline."""
        results = {}
        for cmd in commands:
            if cmd.send_error:
                results.update({i: OperationResult(i, outcome="undeliverable", error=cmd.send_error) for i in cmd.instance_ids})
        open_cmds = [c for c in commands if c.command_id]
        while open_cmds:
            executing = self._executing(open_cmds)
            still_open = []
            for cmd in open_cmds:
                if cmd.command_id in executing and cmd.cancelled_at is None and self.clock() < cmd.deadline:
                    still_open.append(cmd)  # AWS says it is still running: nothing to read per instance yet
                    continue
                details = self._details(cmd)  # left the Executing stage (or unknown): its invocations, with output
                if not cmd.open_ids() or self._grace_over(cmd):
                    results.update({i: self._result(cmd, i, details.get(i, {})) for i in cmd.instance_ids})
                    continue
                if cmd.cancelled_at is None and self.clock() >= cmd.deadline:
                    self._cancel(cmd)
                still_open.append(cmd)
            open_cmds = still_open
            if open_cmds:
                self.sleep(self.config.poll_interval)
        return results

    def _executing(self, cmds):
        """Ids of the commands AWS lists as still executing; empty when the listing fails (then each is read alone)."""
        filters = [{"key": "ExecutionStage", "value": "Executing"}]
        since = min((c.requested_at for c in cmds if hasattr(c.requested_at, "astimezone")), default=None)
        if since is not None:  # one second early: the filter has second precision
            start = since.astimezone(timezone.utc) - timedelta(seconds=1)
            filters.append({"key": "InvokedAfter", "value": start.strftime("%Y-%m-%dT%H:%M:%SZ")})
        try:
            return {c["CommandId"] for c in paginate(self.ssm, "list_commands", "Commands", Filters=filters)}
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            for cmd in cmds:
                cmd.last_error = aws_error_message(e, "ssm:ListCommands", cmd.command_id)
            return set()

    def _grace_over(self, cmd):
        return cmd.cancelled_at is not None and self.clock() >= cmd.cancelled_at + self.cancel_grace

    def _cancel(self, cmd):
        """Deadline passed: cancel the invocations still open, remembering whether each had even been delivered."""
        open_ids = cmd.open_ids()
        cmd.cancelled = {i: cmd.states.get(i, (None, None))[0] for i in open_ids}
        cmd.cancelled_at = self.clock()
        try:
            self.ssm.cancel_command(aws_retry=True, CommandId=cmd.command_id, InstanceIds=open_ids)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            cmd.last_error = cmd.cancel_error = aws_error_message(e, "ssm:CancelCommand", cmd.command_id)

    def _details(self, cmd):
        try:
            invocations = paginate(self.ssm, "list_command_invocations", "CommandInvocations", CommandId=cmd.command_id, Details=True)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            cmd.last_error = aws_error_message(e, "ssm:ListCommandInvocations", cmd.command_id)
            return {}
        found = {inv.get("InstanceId"): inv for inv in invocations}
        cmd.last_error = None  # fresh states: an earlier failed read says nothing about them
        for iid, inv in found.items():
            if iid in cmd.instance_ids:
                cmd.states[iid] = (inv.get("Status"), inv.get("StatusDetails"))
        return found

    def _result(self, cmd, iid, invocation):
        status, details = cmd.states.get(iid, (None, None))
        res = OperationResult(iid, command_id=cmd.command_id, status=status, status_details=details,
                              outcome=classify(status, details), output_excerpt=output_excerpt(invocation))
        if res.outcome == "success" and cmd.request.strict_exit_code:
            code = exit_code_failure(invocation)
            if code is not None:
                res.outcome, res.error = "failed", f"exit code {code}"
        if res.outcome is None and cmd.last_error:  # its latest read failed: it may have run, or not, or still run
            res.outcome, res.error = "state_unknown", self._unknown_error(cmd, iid)
        elif iid in cmd.cancelled and res.outcome in (None, "cancelled"):
            res.outcome, res.error = self._deadline_outcome(cmd, iid)
        elif res.outcome is None:  # never reached a terminal status and was not ours to cancel
            res.outcome, res.error = "timed_out", f"still {status or 'not reported'}: no terminal status"
        elif res.outcome != "success" and not res.error:
            res.error = f"{status}: {details}"
        return res

    def _deadline_outcome(self, cmd, iid):
        """Our own cancel after execution_timeout is a timeout, not a user's cancel (see ssm_patch_run docs)."""
        before = cmd.cancelled[iid]
        limit = cmd.request.execution_timeout
        if is_pending_delivery(before):
            return "delivery_timed_out", f"not delivered within execution_timeout {limit:g}s; {cancel_note(cmd)}"
        return "timed_out", f"still running after execution_timeout {limit:g}s; {cancel_note(cmd)}"

    @staticmethod
    def _unknown_error(cmd, iid):
        """state_unknown: never said to have run or not; only what was last read, and why reading failed."""
        status = cmd.states.get(iid, (None, None))[0]
        cancelled = f"; {cancel_note(cmd)}" if iid in cmd.cancelled else ""
        return f"status unknown (last read: {status or 'none'}): {cmd.last_error}{cancelled}"

    @staticmethod
    def _unwaited(cmd, iid):
        if cmd.send_error:
            return OperationResult(iid, outcome="undeliverable", error=cmd.send_error)
        return OperationResult(iid, command_id=cmd.command_id, status="Pending", outcome="sent")


def cancel_note(cmd):
    """What became of our CancelCommand: "sent" only when the call succeeded."""
    return cmd.cancel_error or "CancelCommand sent"


def send_command_params(request, instance_ids, comment):
    """SendCommand keyword arguments for one chunk (pure, so unit tests pin the exact request)."""
    params = dict(
        InstanceIds=list(instance_ids),
        DocumentName=request.document,
        Comment=comment,
        Parameters=request.parameters,
        TimeoutSeconds=int(request.delivery_timeout),
        MaxConcurrency=request.max_concurrency,
        MaxErrors=request.max_errors,
    )
    if request.output_s3_bucket_name:
        params["OutputS3BucketName"] = request.output_s3_bucket_name
        if request.output_s3_key_prefix:
            params["OutputS3KeyPrefix"] = request.output_s3_key_prefix
    if request.cloudwatch_enabled:
        cw = {"CloudWatchOutputEnabled": True}
        if request.cloudwatch_log_group:
            cw["CloudWatchLogGroupName"] = request.cloudwatch_log_group
        params["CloudWatchOutputConfig"] = cw
    return params
