# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Agent recovery: EC2 actions tried, in order, on an instance whose SSM agent stays away during a command, before the
runner cancels it (option agent_recovery, the role's patching_agent_recovery).

- reboot: RebootInstances, then the agent gets agent_online_timeout again to come back.
- stop_start: StopInstances, wait until stopped, StartInstances, then the agent gets agent_online_timeout. Never on an
  instance with instance-store volumes (their data is lost at a stop; an instance-store root cannot be stopped at all)
  or on an Auto Scaling member (a stopped member is taken for unhealthy and replaced): those skip it, with the reason.

After a reboot inside a command the agent runs the document again once it is back (SSM user guide, "Handling reboots
when running commands"), so the command can still end, and is then judged as usual. Each attempt is recorded:
{action, started_at, ended_at, result, reason, error}. Every EC2 call is batched (the actions take many ids).
Progress is made from the agent watch's checks (no thread, no sleep of its own): a stop is followed by a start at the
first check that reads the instance stopped.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, chunked
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.readers import read_instances

ACTIONS = ("reboot", "stop_start")
DEFAULT_ACTIONS = ("reboot",)
# DescribeInstanceTypes takes at most 100 instance types per call (EC2 API reference).
TYPE_BATCH = 100
# Attempt results.
AGENT_BACK = "agent_back"            # the agent pinged after the action (the command may go on)
AGENT_NOT_BACK = "agent_not_back"    # still silent agent_online_timeout after the action
NOT_STOPPED = "not_stopped"          # StopInstances sent, the instance not stopped within agent_online_timeout
SKIPPED = "skipped"                  # the action does not apply to this instance (reason says why)
FAILED = "failed"                    # EC2 refused the call (error says why)
UNRESOLVED = "unresolved"            # the command ended otherwise (our deadline) before the agent was seen again


def validate_actions(actions):
    """The agent_recovery list: known actions, each at most once, in the order given (one line for a bad value)."""
    if actions is None:
        return list(DEFAULT_ACTIONS)
    if isinstance(actions, str) or not isinstance(actions, (list, tuple)):
        raise PatchingError(f"agent_recovery must be a list of {', '.join(ACTIONS)} (or empty), got {actions!r}")
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise PatchingError(f"agent_recovery: unknown action(s) {', '.join(map(repr, unknown))}: use {', '.join(ACTIONS)}")
    if len(set(actions)) != len(actions):
        raise PatchingError(f"agent_recovery names an action twice: {list(actions)!r}")
    return list(actions)


def utc_now():
    return datetime.now(timezone.utc)


def iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stop_start_blocker(instance, type_has_store):
    """Why stop_start must not run on this instance (a reason code), or None.

    instance: a readers instance record (None: EC2 does not list it); type_has_store: DescribeInstanceTypes'
    InstanceStorageSupported for its type (None: unknown, which is refused too: data could be lost).
    """
    if instance is None:
        return "instance_not_found"
    if T.ASG_KEY in (instance.get("tags") or {}):
        return "auto_scaling_member"
    if instance.get("root_device_type") == "instance-store":
        return "instance_store"
    if type_has_store is None:
        return "instance_type_unknown"
    if type_has_store:
        return "instance_store"
    return None


class AgentRecovery:
    """The escalation state of one command run: per instance, the actions tried and the one in progress."""

    def __init__(self, ec2, actions, timeout, clock, now=utc_now):
        self.ec2 = ec2
        self.actions = list(actions)
        self.timeout = timeout
        self.clock = clock
        self.now = now
        self.attempts = {}   # instance id -> [attempt dict]
        self.next_step = {}  # instance id -> index of the next action in self.actions
        self.pending = {}    # instance id -> {phase: stopping|agent, at: monotonic, aws_at: AWS time the agent counts from}

    # ------------------------------------------------------------ what the watch asks

    def since(self, iid):
        """The AWS time the instance's silence counts from since our latest action (None: no action waiting)."""
        state = self.pending.get(iid)
        return state["aws_at"] if state and state["phase"] == "agent" else None

    def busy(self, iid):
        """True while a stop is in flight: the agent is away on purpose, silence says nothing."""
        return self.pending.get(iid, {}).get("phase") == "stopping"

    def seen(self, iid, last_ping, ping_status="Online"):
        """The agent is Online with a ping (AWS time) after the pending action's start: that action brought it back.

        Online is required too: the action's AWS time is estimated a little early (see SentCommand.aws_time), so a
        ping from just before the action could otherwise pass for one after it.
        """
        state = self.pending.get(iid)
        if (state and state["phase"] == "agent" and ping_status == "Online" and hasattr(last_ping, "astimezone")
                and last_ping > state["aws_at"]):
            self._end(iid, AGENT_BACK)

    def tick(self, aws_now):
        """Move stops on: a stopped instance is started; one not stopped within the timeout gives up that action."""
        stopping = [i for i, s in self.pending.items() if s["phase"] == "stopping"]
        if not stopping:
            return
        try:
            states = {r["instance_id"]: r.get("state") for r in read_instances(self.ec2, stopping)}
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            states = {}  # read again at the next check; the timeout still applies
        stopped = [i for i in stopping if states.get(i) == "stopped"]
        for iid in stopping:
            if iid not in stopped and self.clock() - self.pending[iid]["at"] >= self.timeout:
                self._end(iid, NOT_STOPPED, error=f"still {states.get(iid) or 'unknown'} {self.timeout:g}s after StopInstances")
        for iid, error in self._call("start_instances", "ec2:StartInstances", stopped).items():
            if error:
                self._end(iid, FAILED, error=error)
            else:
                self.pending[iid] = dict(self.pending[iid], phase="agent", at=self.clock(), aws_at=aws_now)

    def escalate(self, lost, aws_now):
        """`lost`: ids silent past the timeout. Ends their pending attempt, starts their next action (batched);
        returns the ids with no action left (to be cancelled), each with a note on what was tried."""
        for iid in lost:
            if iid in self.pending:
                self._end(iid, AGENT_NOT_BACK)
        todo = {a: [] for a in self.actions}
        for iid in lost:
            action = self._next_action(iid)
            if action:
                todo[action].append(iid)
        if todo.get("stop_start"):
            self._skip_unstoppable(todo)
        for iid, error in self._call("reboot_instances", "ec2:RebootInstances", todo.get("reboot", [])).items():
            self._start(iid, "reboot", "agent", aws_now)
            if error:
                self._end(iid, FAILED, error=error)
        for iid, error in self._call("stop_instances", "ec2:StopInstances", todo.get("stop_start", [])).items():
            self._start(iid, "stop_start", "stopping", aws_now)
            if error:
                self._end(iid, FAILED, error=error)
        started = set(self.pending)
        gave_up = [i for i in lost if i not in started and self._next_action(i, peek=True) is None]
        retry = [i for i in lost if i not in started and i not in gave_up]
        return gave_up + (self.escalate(retry, aws_now) if retry else [])

    def finish(self, outcomes):
        """End attempts still open when the command ended: only a running agent reports a document's end."""
        for iid in list(self.pending):
            self._end(iid, AGENT_BACK if outcomes.get(iid) in ("success", "failed") else UNRESOLVED)

    def note(self, iid):
        """What was tried, for the cancel message: 'recovery: reboot agent_not_back, stop_start skipped (instance_store)'."""
        tried = [f"{a['action']} {a['result']}" + (f" ({a['reason']})" if a.get("reason") else "") for a in self.attempts.get(iid, [])]
        return "recovery: " + ", ".join(tried) if tried else "no recovery action configured"

    # ------------------------------------------------------------ inside

    def _next_action(self, iid, peek=False):
        step = self.next_step.get(iid, 0)
        if step >= len(self.actions):
            return None
        if not peek:
            self.next_step[iid] = step + 1
        return self.actions[step]

    def _start(self, iid, action, phase, aws_now):
        self.attempts.setdefault(iid, []).append(dict(action=action, started_at=iso(self.now()), ended_at=None, result=None,
                                                      reason=None, error=None))
        self.pending[iid] = dict(phase=phase, at=self.clock(), aws_at=aws_now)

    def _end(self, iid, result, reason=None, error=None):
        self.pending.pop(iid, None)
        attempt = self.attempts[iid][-1]
        attempt.update(ended_at=iso(self.now()), result=result, reason=reason, error=error)

    def _skip_unstoppable(self, todo):
        """Take out of stop_start the instances it must not touch, recording why (they go on to the next action)."""
        ids = todo["stop_start"]
        try:
            instances = {r["instance_id"]: r for r in read_instances(self.ec2, ids)}
            stores = self._type_storage({r.get("instance_type") for r in instances.values() if r.get("instance_type")})
            error = None
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            instances, stores, error = {}, {}, aws_error_message(e, "ec2:DescribeInstances/DescribeInstanceTypes")
        keep = []
        for iid in ids:
            inst = instances.get(iid)
            reason = "instance_unreadable" if error else stop_start_blocker(inst, stores.get((inst or {}).get("instance_type")))
            if reason is None:
                keep.append(iid)
                continue
            self._start(iid, "stop_start", "skipped", None)
            self._end(iid, SKIPPED, reason=reason, error=error)
        todo["stop_start"] = keep

    def _type_storage(self, types):
        """{instance type: InstanceStorageSupported}: NVMe instance-store disks exist whether mapped or not."""
        found = {}
        for chunk in chunked(sorted(types), TYPE_BATCH):
            for item in self.ec2.describe_instance_types(InstanceTypes=chunk).get("InstanceTypes", []):
                found[item["InstanceType"]] = bool(item.get("InstanceStorageSupported"))
        return found

    def _call(self, method, action, ids):
        """{id: None or error}. A refused batch is tried id by id, so one instance's state does not hold up the rest."""
        results = {}
        for chunk in chunked(ids, EC2_ID_BATCH):
            error = self._one_call(method, action, chunk)
            if error and len(chunk) > 1:
                results.update((i, self._one_call(method, action, [i])) for i in chunk)
            else:
                results.update((i, error) for i in chunk)
        return results

    def _one_call(self, method, action, ids):
        try:
            getattr(self.ec2, method)(InstanceIds=ids)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            return aws_error_message(e, action, ", ".join(ids))
        return None
