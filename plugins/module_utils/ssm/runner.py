# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Batched SSM Run Command: send to at most 50 instances per command, poll all open commands at once, classify per instance.

Each poll is one ListCommands (ExecutionStage=Executing, since the first send, up to 50 commands a page); a command's
invocations are listed (with output) only once it has left that stage, or when its deadline needs per-instance states.
Time is read through injectable `clock`/`sleep` so the deadline logic is unit-testable without waiting.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Dict, List, Optional

try:
    import botocore.exceptions
except ImportError:  # AnsibleAWSModule reports the missing SDK
    pass

from ansible_collections.cms.patching.plugins.module_utils.aws import call_deadline
from ansible_collections.cms.patching.plugins.module_utils.batching import SSM_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, error_code, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.models import OperationResult
from ansible_collections.cms.patching.plugins.module_utils.ssm.status import (
    classify, exit_code_failure, is_pending_delivery, normalise, plugin_excerpt, stream_excerpt,
)

# After our own CancelCommand, how long invocations get to report Cancelled before we stop waiting.
CANCEL_GRACE_S = 60.0
# SendCommand has no idempotency token, so it goes through a client without botocore retries and is retried here:
# after an error that may hide an accepted command, the command is looked for (by its Comment token) before a resend.
SEND_ATTEMPTS = 10
SEND_BACKOFF_S = (1.0, 20.0)  # jittered exponential backoff: base, cap
# ListCommands InvokedAfter is compared on AWS's clock; SigV4 refuses requests from clocks more than 5 minutes off.
CLOCK_SKEW_S = 300
THROTTLING_CODES = frozenset(("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                              "RequestThrottledException"))
# GetCommandInvocation (whole stdout/stderr, one call per invocation) only for failures, at most this many per run.
OUTPUT_FETCH_LIMIT = 100


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
    # The caller judges a success on its stdout (BaselineOverride runs): read it whole (GetCommandInvocation), uncapped.
    read_stdout: bool = False


@dataclass
class SentCommand:
    """One SendCommand (<= 50 instances) and what polling has learnt about it."""

    request: CommandRequest
    instance_ids: List[str]
    comment: str = ""  # with this send's own token: how a lost answer is found again in ListCommands
    command_id: Optional[str] = None
    requested_at: object = None  # AWS's RequestedDateTime, for freshness checks on AWS's own clock
    deadline: float = 0.0
    send_error: Optional[str] = None
    send_unknown: bool = False  # the answer was lost and ListCommands could not tell whether AWS accepted it
    states: Dict[str, tuple] = field(default_factory=dict)  # instance id -> (Status, StatusDetails)
    cancelled_at: Optional[float] = None
    cancelled: Dict[str, Optional[str]] = field(default_factory=dict)  # instance id -> Status when we cancelled it
    # instance id -> why its state was unknown when we cancelled it (the read at the deadline failed, or none ever worked)
    cancel_unread: Dict[str, str] = field(default_factory=dict)
    last_error: Optional[str] = None  # why the latest read of this command failed (None once a read succeeds)
    cancel_error: Optional[str] = None  # why our own CancelCommand failed: then no message may say it was sent
    lost: Dict[str, dict] = field(default_factory=dict)  # instance id -> {at, outcome, error}: its agent was lost (watch)

    def open_ids(self):
        return [i for i in self.instance_ids if classify(*self.states.get(i, (None, None))) is None]

    def aws_time(self, now):
        """AWS's clock at monotonic time `now`: RequestedDateTime plus the monotonic time since the send (None if unknown).

        The send's monotonic time is deadline - execution_timeout (see send()); it is taken after AWS stamped
        RequestedDateTime, so the estimate is a little early, never late.
        """
        if not hasattr(self.requested_at, "astimezone"):
            return None
        sent = self.deadline - self.request.execution_timeout
        return self.requested_at.astimezone(timezone.utc) + timedelta(seconds=now - sent)


class SsmRunner:
    """Runs CommandRequests for a run (RunConfig): SendCommand per 50 ids, one ListCommands per poll."""

    def __init__(self, ssm, config, clock=time.monotonic, sleep=time.sleep, cancel_grace=CANCEL_GRACE_S, send_client=None,
                 wallclock=None):
        self.ssm = ssm
        self.send_client = send_client or ssm  # should have no botocore retries (see SEND_ATTEMPTS)
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.cancel_grace = cancel_grace
        self.wallclock = wallclock or (lambda: datetime.now(timezone.utc))
        self.sent = []
        self.outputs_fetched = 0
        # (command id, instance id) -> (stdout or None, read error) of successes of requests with read_stdout
        self.stdout = {}

    def run(self, requests, watch=None):
        """Send every request (unless check mode) and, when config.wait, wait for every invocation; results by id."""
        if self.config.check_mode:
            return {i: OperationResult(i, outcome="would_run") for r in requests for i in r.instance_ids}
        commands = [c for r in requests for c in self.send(r)]
        if not self.config.wait:
            return {i: self._unwaited(c, i) for c in commands for i in c.instance_ids}
        return self.wait(commands, watch)

    def send(self, request):
        """One SendCommand per chunk of <= 50 ids. A refused chunk is recorded, never raised: other chunks may be running."""
        commands = []
        for ids in chunked(request.instance_ids, SSM_BATCH):
            cmd = SentCommand(request, ids, comment=self.config.comment(request.step, send_token()))
            self._send_once(cmd)
            commands.append(cmd)
            self.sent.append(cmd)
        return commands

    def _send_once(self, cmd):
        """Send cmd, retrying with backoff; after an error that may hide an accepted command, adopt it instead of resending."""
        params = send_command_params(cmd.request, cmd.instance_ids, cmd.comment)
        since = self.wallclock() - timedelta(seconds=CLOCK_SKEW_S)
        maybe_sent, error = False, None
        for attempt in range(SEND_ATTEMPTS + 1):
            if attempt:
                self.sleep(send_backoff(attempt))
            if maybe_sent:
                found, lookup_error = self._find_sent(cmd, since)
                if found:
                    return self._accepted(cmd, found)
                if lookup_error:  # cannot tell whether AWS has it: a resend could run it twice
                    cmd.send_error, cmd.send_unknown = f"{error}; and {lookup_error}: not sent again", True
                    return None
            if attempt == SEND_ATTEMPTS:
                break
            try:
                response = self.send_client.send_command(**params)
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                error = aws_error_message(e, "ssm:SendCommand", f"{len(cmd.instance_ids)} instance(s)")
                maybe_sent = maybe_sent or may_have_been_accepted(e)  # once maybe sent, always look before resending
                if not (maybe_sent or error_code(e) in THROTTLING_CODES):
                    break  # refused for good (bad input, unknown instance, access denied): a resend changes nothing
                continue
            return self._accepted(cmd, response["Command"])
        cmd.send_error = error
        return None

    def _accepted(self, cmd, command):
        cmd.command_id = command["CommandId"]
        cmd.requested_at = command.get("RequestedDateTime")
        cmd.deadline = self.clock() + cmd.request.execution_timeout
        return cmd

    def _find_sent(self, cmd, since):
        """(the command AWS accepted for cmd, or None; error text if ListCommands failed). ListCommands has no Comment
        filter: list this instance's commands since just before the send and match our token and the instance ids."""
        filters = [{"key": "InvokedAfter", "value": since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}]
        try:
            listed = paginate(self.ssm, "list_commands", "Commands", InstanceId=cmd.instance_ids[0], Filters=filters)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            return None, aws_error_message(e, "ssm:ListCommands", "the lost SendCommand")
        for command in listed:
            if (command.get("Comment") == cmd.comment and command.get("DocumentName") == cmd.request.document
                    and set(command.get("InstanceIds") or []) == set(cmd.instance_ids)):
                return command, None
        return None, None

    def wait(self, commands, watch=None):
        """Poll the open commands once per poll_interval until all are terminal; enforce each one's deadline.

        `watch`, optional, is called with the open commands after each poll and returns {instance id: (outcome, error)}
        for instances whose agent is lost; those whose invocation is InProgress are cancelled and end with that outcome.
        """
        results = {}
        for cmd in commands:
            if cmd.send_error:
                results.update({i: unsent_result(cmd, i) for i in cmd.instance_ids})
        open_cmds = [c for c in commands if c.command_id]
        while open_cmds:
            with call_deadline(self._next_deadline(open_cmds), self.clock):  # no read retries past it
                open_cmds = self._poll(open_cmds, results, watch)
            if open_cmds:
                self.sleep(self.config.poll_interval)
        return results

    def _next_deadline(self, cmds):
        """The earliest moment this wait must act on: a command's deadline, or the end of its cancel grace."""
        return min(c.deadline if c.cancelled_at is None else c.cancelled_at + self.cancel_grace for c in cmds)

    def _poll(self, open_cmds, results, watch):
        """One poll of the open commands: settles those that ended into results, returns those still open."""
        executing = self._executing(open_cmds)
        still_open = []
        for cmd in open_cmds:
            if (cmd.command_id in executing and cmd.cancelled_at is None and self.clock() < cmd.deadline
                    and not self._lost_open(cmd)):
                still_open.append(cmd)  # AWS says it is still running: nothing to read per instance yet
                continue
            details = self._details(cmd)  # left the Executing stage (or unknown): its invocations, with output
            if not cmd.open_ids() or self._grace_over(cmd) or self._lost_settled(cmd):
                results.update({i: self._settle(cmd, i, details.get(i, {})) for i in cmd.instance_ids})
                continue
            if cmd.cancelled_at is None and self.clock() >= cmd.deadline:
                self._cancel(cmd)
            still_open.append(cmd)
        open_cmds = still_open
        if open_cmds and watch is not None:
            self._cancel_lost(open_cmds, watch([c for c in open_cmds if c.cancelled_at is None]))
        return open_cmds

    def _cancel_lost(self, cmds, lost):
        """Cancel, once each, the invocations of lost agents that AWS lists InProgress (delivered and running: an
        undelivered one is left to its delivery timeout, since nothing ran there)."""
        for cmd in cmds:
            ids = [i for i in cmd.open_ids() if i in lost and i not in cmd.lost]
            if not ids or cmd.cancelled_at is not None:
                continue
            self._details(cmd)
            ids = [i for i in ids if normalise(cmd.states.get(i, (None, None))[0]) == "inprogress"]
            if not ids:
                continue
            note = self._send_cancel(cmd, ids) or "CancelCommand sent"
            for iid in ids:
                outcome, error = lost[iid]
                cmd.lost[iid] = dict(at=self.clock(), outcome=outcome, error=f"{error}; {note}")

    def _lost_open(self, cmd):
        """An instance cancelled for a lost agent has not reported its end yet: read the command's invocations."""
        return any(i in cmd.lost for i in cmd.open_ids())

    def _lost_settled(self, cmd):
        """Only lost instances are left open, each past the cancel grace: stop waiting for them (they may never answer)."""
        open_ids = cmd.open_ids()
        return bool(open_ids) and all(i in cmd.lost and self.clock() >= cmd.lost[i]["at"] + self.cancel_grace for i in open_ids)

    def _settle(self, cmd, iid, invocation):
        """The instance's result; a lost agent's outcome unless the invocation still ended Success or Failed on its own."""
        res = self._result(cmd, iid, invocation)
        lost = cmd.lost.get(iid)
        if lost and res.outcome not in ("success", "failed"):
            res.outcome, res.error = lost["outcome"], lost["error"]
        return res

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
        """Deadline passed: cancel the invocations still open, remembering whether each had even been delivered.

        Each one's status is the latest successful read (states); when that read is not the one just made (it failed)
        or there never was one, the instance may have started since: it is marked unread, never taken as undelivered.
        """
        open_ids = cmd.open_ids()
        cmd.cancelled = {i: cmd.states.get(i, (None, None))[0] for i in open_ids}
        cmd.cancel_unread = {i: cmd.last_error or "its invocation was never listed" for i in open_ids
                             if cmd.last_error or i not in cmd.states}
        cmd.cancelled_at = self.clock()
        error = self._send_cancel(cmd, open_ids)
        if error:
            cmd.last_error = cmd.cancel_error = error

    def _send_cancel(self, cmd, instance_ids):
        """CancelCommand for these invocations; None when it was sent, else the one-line error."""
        try:
            with call_deadline(None):  # the cancel that enforces a deadline is never cut short by it
                self.ssm.cancel_command(aws_retry=True, CommandId=cmd.command_id, InstanceIds=instance_ids)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            return aws_error_message(e, "ssm:CancelCommand", cmd.command_id)
        return None

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
                              outcome=classify(status, details))
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
        self._add_output(cmd, res, invocation)
        return res

    def _add_output(self, cmd, res, invocation):
        """The excerpt that tells most: for a failure that ran (or a success whose stdout is judged), the ends of
        stdout/stderr (GetCommandInvocation), else the listing's Output; marked when cut; and where the whole output is,
        when S3 or CloudWatch Logs was asked for."""
        res.output_excerpt, res.output_truncated = plugin_excerpt(invocation)
        res.output_location = output_location(cmd.request, cmd.command_id, res.instance_id)
        judged = cmd.request.read_stdout and res.outcome == "success"
        if not (judged or self._wants_streams(res)):
            return
        self.outputs_fetched += 1
        try:
            full = self.ssm.get_command_invocation(aws_retry=True, CommandId=cmd.command_id, InstanceId=res.instance_id)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            if judged:
                self.stdout[(cmd.command_id, res.instance_id)] = (
                    None, aws_error_message(e, "ssm:GetCommandInvocation", f"{cmd.command_id} {res.instance_id}"))
            return  # the listing's excerpt stands
        if judged:
            self.stdout[(cmd.command_id, res.instance_id)] = (full.get("StandardOutputContent") or "", None)
        if full.get("StandardOutputContent") or full.get("StandardErrorContent"):
            res.output_excerpt, res.output_truncated = stream_excerpt(full.get("StandardOutputContent"), full.get("StandardErrorContent"))

    def _wants_streams(self, res):
        """A failure that ran to its end: its stderr tells why (at most OUTPUT_FETCH_LIMIT per run)."""
        ran_to_end = classify(res.status, res.status_details) in ("success", "failed", "timed_out")
        return res.outcome in ("failed", "timed_out") and ran_to_end and self.outputs_fetched < OUTPUT_FETCH_LIMIT

    def _deadline_outcome(self, cmd, iid):
        """Our own cancel after execution_timeout is a timeout, not a user's cancel (see ssm_patch_run docs).

        Undelivered ("nothing ran") only when the read made at the deadline showed it pending; unread then, it is
        state_unknown unless an earlier read had already seen it run.
        """
        before = cmd.cancelled[iid]
        limit = cmd.request.execution_timeout
        if iid in cmd.cancel_unread and is_pending_delivery(before):
            return "state_unknown", (f"status unknown at execution_timeout {limit:g}s (last read: {before or 'none'}): "
                                     f"{cmd.cancel_unread[iid]}; {cancel_note(cmd)}")
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
            return unsent_result(cmd, iid)
        return OperationResult(iid, command_id=cmd.command_id, status="Pending", outcome="sent")


def unsent_result(cmd, iid):
    """No command id: refused by AWS (nothing ran), or its answer lost beyond finding out (it may be running)."""
    return OperationResult(iid, outcome="state_unknown" if cmd.send_unknown else "undeliverable", error=cmd.send_error)


def send_token():
    """A short per-send token for the Comment (8 hex digits): unique among one run's sends of the same minutes."""
    return uuid.uuid4().hex[:8]


def send_backoff(attempt, base=SEND_BACKOFF_S[0], cap=SEND_BACKOFF_S[1]):
    """Seconds before retry `attempt` (1, 2, ...): exponential with jitter, so parallel runs do not retry in step."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def may_have_been_accepted(exc):
    """Could AWS have run the SendCommand although we got an error? Yes when the answer was lost (connection closed,
    read timeout) or AWS failed on its side (5xx); no when AWS refused it (4xx, throttling included) or nothing was sent."""
    if isinstance(exc, (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        return True
    response = getattr(exc, "response", None) or {}
    return (response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0) >= 500


def output_location(request, command_id, instance_id):
    """Where SSM writes the whole output of one invocation, when the request asked for S3 and/or CloudWatch Logs.

    S3: under <prefix>/<command id>/<instance id>/ (SSM user guide, Run Command output in S3); CloudWatch Logs: the
    group given, else `aws/ssm/<document>` (SSM API reference, CloudWatchOutputConfig), streams <command id>/<instance id>/...
    """
    places = []
    if request.output_s3_bucket_name and command_id:
        prefix = (request.output_s3_key_prefix or "").strip("/")
        places.append(f"s3://{request.output_s3_bucket_name}/{prefix + '/' if prefix else ''}{command_id}/{instance_id}/")
    if request.cloudwatch_enabled and command_id:
        group = request.cloudwatch_log_group or f"aws/ssm/{request.document}"
        places.append(f"CloudWatch Logs group {group}, streams {command_id}/{instance_id}/")
    return "; ".join(places) or None


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
