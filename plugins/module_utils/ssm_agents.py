# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSM agent registration and PingStatus, read with DescribeInstanceInformation in chunks of 50 ids."""

from __future__ import annotations

import time

from ansible_collections.cms.patching.plugins.module_utils.batching import SSM_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, is_aws_error

ONLINE = "Online"
NOT_REGISTERED = "NotRegistered"  # not in DescribeInstanceInformation at all: SSM cannot reach it


def describe_agents(ssm, instance_ids):
    """{instance id: {ping_status, platform_type, platform_name, agent_version}} for the registered ones."""
    agents = {}
    for ids in chunked(instance_ids, SSM_BATCH):
        infos = paginate(ssm, "describe_instance_information", "InstanceInformationList",
                         Filters=[{"Key": "InstanceIds", "Values": ids}])
        for info in infos:
            agents[info["InstanceId"]] = dict(
                ping_status=info.get("PingStatus"),
                platform_type=info.get("PlatformType"),
                platform_name=info.get("PlatformName"),
                agent_version=info.get("AgentVersion"),
            )
    return agents


def ping_statuses(ssm, instance_ids):
    agents = describe_agents(ssm, instance_ids)
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
