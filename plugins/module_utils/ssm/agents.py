# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSM agent registration and PingStatus, from the shared agent reader (DescribeInstanceInformation, 50 ids per call)."""

from __future__ import annotations

import datetime
import time

from ansible_collections.cms.patching.plugins.module_utils.aws import call_deadline
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.readers import read_agents

ONLINE = "Online"
NOT_REGISTERED = "NotRegistered"  # not in DescribeInstanceInformation at all: SSM cannot reach it


def ping_statuses(ssm, instance_ids):
    """{instance id: PingStatus}, NotRegistered for an instance SSM does not manage."""
    agents = read_agents(ssm, instance_ids)
    return {i: agents.get(i, {}).get("ping_status") or NOT_REGISTERED for i in instance_ids}


def wait_online(ssm, instance_ids, timeout, poll_interval, clock=time.monotonic, sleep=time.sleep):
    """Poll until every agent is Online or `timeout` passes; ({instance id: last PingStatus or None}, last error).

    Only the instances not yet Online are asked about again, so a fleet costs ceil(n/50) calls per poll at most.
    A failing describe is retried at the next poll; only the deadline ends the wait.
    """
    last = {i: None for i in instance_ids}
    error = None
    waiting = list(instance_ids)
    deadline = clock() + timeout
    while waiting:
        try:
            with call_deadline(deadline, clock):  # no retry past the wait's deadline
                last.update(ping_statuses(ssm, waiting))
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            error = aws_error_message(e, "ssm:DescribeInstanceInformation")
        waiting = [i for i in waiting if last[i] != ONLINE]
        if not waiting or clock() >= deadline:
            break
        sleep(min(poll_interval, max(deadline - clock(), 0)))
    return last, error


class AgentWatch:
    """SsmRunner's `watch` hook: finds instances whose agent went away while their command is open (a reboot that hangs).

    AWS does not document when PingStatus flips, so the signal is LastPingDateTime: an agent silent for longer than
    `timeout` since the later of its last ping and the command's RequestedDateTime is lost. Agents are read at most once
    per `interval` seconds, with one DescribeInstanceInformation per 50 open instances; a failed read waits for the next.
    """

    def __init__(self, ssm, timeout, interval, clock=time.monotonic, outcome="reboot_timeout", recovery=None):
        self.ssm = ssm
        self.recovery = recovery  # AgentRecovery: EC2 actions tried before an instance is given up (None: none)
        self.timeout = timeout
        self.interval = interval
        self.clock = clock
        self.outcome = outcome
        self.last_check = clock()  # the first check comes one interval after the send, not at the first poll
        self.checks = 0
        self.error = None

    def __call__(self, commands):
        now = self.clock()
        ids = list(dict.fromkeys(i for cmd in commands for i in cmd.open_ids()))
        if not ids or now - self.last_check < self.interval:
            return {}
        self.last_check = now
        self.checks += 1
        try:
            agents = read_agents(self.ssm, ids)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            self.error = aws_error_message(e, "ssm:DescribeInstanceInformation")
            return {}
        lost = {}
        aws_times = {}
        for cmd in commands:
            # AWS's clock, not the controller's: LastPingDateTime is stamped by AWS, and a controller clock that is off
            # (no NTP, a resumed VM) would make healthy agents look silent or hung ones alive. RequestedDateTime plus
            # monotonic time since the send needs no synchronised clock (see SentCommand.aws_time).
            aws_now = cmd.aws_time(now)
            for iid in cmd.open_ids():
                aws_times[iid] = aws_now
                last_ping = parse_time(agents.get(iid, {}).get("last_ping"))
                since = cmd.requested_at
                if self.recovery is not None:
                    self.recovery.seen(iid, last_ping, agents.get(iid, {}).get("ping_status"))
                    if self.recovery.busy(iid):
                        continue
                    since = later(since, self.recovery.since(iid))  # an action restarts the count
                silent = silence(last_ping, since, aws_now)
                if silent is not None and silent > self.timeout:
                    lost[iid] = (self.outcome, f"SSM agent silent for {silent:.0f}s while the command was InProgress (last ping "
                                               f"{agents[iid]['last_ping']}), longer than "
                                               f"agent_online_timeout {self.timeout:g}s")
        if self.recovery is None:
            return lost
        now_aws = max((t for t in aws_times.values() if t is not None), default=None)
        self.recovery.tick(now_aws)
        given_up = self.recovery.escalate(list(lost), now_aws)
        return {iid: (lost[iid][0], f"{lost[iid][1]}; {self.recovery.note(iid)}") for iid in given_up}


def parse_time(value):
    """An agent record's ISO 8601 time back to a datetime (None when absent or unreadable)."""
    try:
        return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return None


def later(first, second):
    """The later of two AWS times, either of which may be unknown (None)."""
    if not hasattr(second, "astimezone"):
        return first
    if not hasattr(first, "astimezone"):
        return second
    return max(first, second)


def silence(last_ping, requested_at, aws_now):
    """Seconds the agent has been silent since the command was requested (None when a time is unknown)."""
    if not hasattr(last_ping, "astimezone") or aws_now is None:
        return None
    since = last_ping
    if hasattr(requested_at, "astimezone") and requested_at > since:
        since = requested_at
    return (aws_now - since).total_seconds()
