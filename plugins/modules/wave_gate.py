#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wave_gate
short_description: Read the run's gates - CloudWatch alarms and the operator's stop switch - once, or for a bake time
version_added: 0.1.0
description:
  - "Reads the CloudWatch alarms of O(alarms) (or every alarm whose name starts with O(alarm_prefix)) with
    C(DescribeAlarms), metric and composite alarms both (C(AlarmTypes)), at most 100 names per call, and the SSM
    parameter O(stop_parameter) with C(GetParameter)."
  - "The verdict is V(alarm) when an alarm is in C(ALARM) (also C(INSUFFICIENT_DATA) with O(alarm_on_missing_data=true)),
    else V(stop) when the parameter's value is C(stop), else V(go). A missing parameter means go."
  - "Every configured alarm must exist: a missing one (or a prefix that matches none) makes the gate unreadable, so a typo
    cannot switch the gate off. An unreadable gate (also an AWS error) fails the module with one line, or with
    O(fail_on_unreadable=false) returns the verdict V(unreadable) and the error."
  - "With O(bake_time) above 0 the gates are watched: read every O(poll_interval) seconds until one says stop, and at
    least once at or after O(bake_time) seconds. Check mode reads once and does not wait."
  - "With O(targets) (the wave's patched instances), each read also asks C(DescribeTargetHealth) of their target groups
    (not those discovery found C(unused)), one call per target group with the wave's targets, per account and region.
    A target in C(unhealthy) (not C(initial) nor C(draining)) gives the verdict V(bake_unhealthy) and the target group's
    name in RV(target_group); an alarm still wins."
  - Only reads, unless O(set_stop) is given (C(playbooks/stop.yml)).
  - "O(set_stop=true) sets the stop switch to C(stop), O(set_stop=false) back to C(go) (C(PutParameter) with C(Overwrite));
    nothing else is read then. Check mode reads the parameter and reports whether it would change."
options:
  alarms:
    description:
      - Alarm names, or dicts with C(name) and optionally C(region), C(role_arn) and C(external_id) for an alarm in another
        region or account (default the module's region and credentials).
      - Mutually exclusive with O(alarm_prefix).
    type: list
    elements: raw
    default: []
  alarm_prefix:
    description: Every alarm whose name starts with this, in the module's region and account (C(AlarmNamePrefix)).
    type: str
    default: ''
  alarm_on_missing_data:
    description: Count an alarm in C(INSUFFICIENT_DATA) as firing.
    type: bool
    default: false
  stop_parameter:
    description: The stop switch, an SSM parameter in the module's region and account. Empty reads no stop switch.
    type: str
    default: /cms-patching/stop
  bake_time:
    description: Seconds to watch the gates for (0 reads them once).
    type: int
    default: 0
  poll_interval:
    description: Seconds between two reads while watching.
    type: float
    default: 10
  targets:
    description:
      - "Instances whose target health is watched: dicts with C(instance_id), C(region), C(role_arn), C(external_id) and
        C(target_groups) (discovery's, as in M(cms.patching.ssm_patch_wave)'s O(cms.patching.ssm_patch_wave#module:instances))."
    type: list
    elements: dict
    default: []
  fail_on_unreadable:
    description: Fail when a gate cannot be read or a configured alarm does not exist; V(false) returns the verdict V(unreadable).
    type: bool
    default: true
  set_stop:
    description: Set the stop switch O(stop_parameter) (V(true) to C(stop), V(false) to C(go)) instead of reading the gates.
    type: bool
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Refuse the run when a configured alarm does not exist
  cms.patching.wave_gate:
    alarms: [web-5xx, {name: db-latency, region: eu-west-1}]
    stop_parameter: ""

- name: Watch the alarms and the stop switch for ten minutes after a wave
  cms.patching.wave_gate:
    alarms: [web-5xx]
    bake_time: 600
    poll_interval: 30
    fail_on_unreadable: false
  register: bake

- name: Stop every run that reads the default stop switch after its wave in flight
  cms.patching.wave_gate:
    set_stop: true
"""

RETURN = r"""
verdict:
  description: "V(go), V(alarm), V(bake_unhealthy), V(stop) or V(unreadable) (only with O(fail_on_unreadable=false))."
  returned: always
  type: str
  sample: alarm
alarm_name:
  description: The first alarm found firing (null unless V(alarm)).
  returned: always
  type: str
target_group:
  description: The target group in which a target was found C(unhealthy) (with V(bake_unhealthy)).
  returned: with V(bake_unhealthy)
  type: str
unhealthy_instance:
  description: The instance whose target was found C(unhealthy) (with V(bake_unhealthy)).
  returned: with V(bake_unhealthy)
  type: str
firing:
  description: Every alarm found firing by the last read.
  returned: always
  type: list
  elements: str
alarms:
  description: "Each alarm as last read: C(name), C(type) (C(MetricAlarm) or C(CompositeAlarm)), C(state), C(reason), C(updated), C(region)."
  returned: always
  type: list
  elements: dict
stop_value:
  description: The stop parameter's value (null when it does not exist or is not read).
  returned: always
  type: str
error:
  description: Why a gate could not be read (with V(unreadable)).
  returned: always
  type: str
polls:
  description: How many times the gates were read.
  returned: always
  type: int
watched:
  description: Seconds between the first and the last read.
  returned: unless O(set_stop) is given
  type: float
previous:
  description: The stop parameter's value before O(set_stop) (null when it did not exist).
  returned: with O(set_stop)
  type: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import AwsSession
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, exit_with
from ansible_collections.cms.patching.plugins.module_utils.gates import GateReader, set_stop, validate, watch


def read_gates(module):
    params = module.params
    if params["set_stop"] is not None:
        if not params["stop_parameter"]:
            raise PatchingError("set_stop needs a stop_parameter")
        return set_stop(AwsSession(module).client("ssm"), params["stop_parameter"], params["set_stop"], module.check_mode)
    alarms, prefix = validate(params)  # before any AWS call
    sessions = {}

    def client_for(service, region, role_arn, external_id):
        key = (region, role_arn, external_id)
        if key not in sessions:
            sessions[key] = AwsSession(module, region, role_arn, "cms-patching-gate", external_id)
        return sessions[key].client(service)

    reader = GateReader(client_for, alarms, prefix, AwsSession(module).region, params["stop_parameter"], params["alarm_on_missing_data"],
                        params["targets"])
    bake_time = 0 if module.check_mode else params["bake_time"]
    result = watch(reader.read, bake_time, params["poll_interval"])
    if result["verdict"] == "unreadable" and params["fail_on_unreadable"]:
        raise PatchingError(result["error"])
    return dict(result, changed=False)


def main():
    argument_spec = dict(
        alarms=dict(type="list", elements="raw", default=[]),
        alarm_prefix=dict(type="str", default=""),
        alarm_on_missing_data=dict(type="bool", default=False),
        stop_parameter=dict(type="str", default="/cms-patching/stop"),
        bake_time=dict(type="int", default=0),
        poll_interval=dict(type="float", default=10),
        targets=dict(type="list", elements="dict", default=[]),
        fail_on_unreadable=dict(type="bool", default=True),
        set_stop=dict(type="bool"),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "wave_gate", read_gates)


if __name__ == "__main__":
    main()
