#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: run_report
short_description: Merge per-instance phase results into a patch run's JSON, CSV and HTML report
version_added: 0.1.0
description:
  - Writes C(<report_dir>/<run_id>/report.json), C(report.csv) and C(report.html), or C(<run_id>/slice-<slice>/) for a sliced AWX job.
  - Invocations that share a run id merge into the same files, newer results winning per instance, so phases run as separate jobs
    give one report. A run never touches another run id's files.
  - Writes are atomic (temporary file and rename, under a lock) and the files are readable by their owner only.
  - The schema of C(report.json) is documented in C(docs/report-schema.md).
  - Runs on the controller and makes no AWS call. In check mode it reports the paths it would write and writes nothing,
    so roles call it with C(check_mode=false) to keep a dry run's plan.
options:
  report_dir:
    description: Directory that holds one sub-directory per run id.
    type: path
    default: reports
  run_id:
    description: The run id that ties the phases of one run together.
    type: str
    required: true
  slice:
    description: AWX job slice number; each slice writes its own sub-directory, so concurrent slices never write the same file.
    type: str
  phase:
    description: Name of the phase that produced O(instances), recorded in the report's C(phases) list.
    type: str
  instances:
    description:
      - Per-instance results to merge, each with C(instance_id) and any of C(name), C(account_id), C(region), C(platform),
        C(discovery), C(backup), C(patch), C(services), C(validation), C(rollback), C(steps) (merged per step), C(reason),
        C(alarm_name) and C(final_status) (C(not_patched) needs a C(reason)).
    type: list
    elements: dict
    default: []
  results:
    description:
      - Raw per-instance results of a phase module, converted to report entries according to O(phase)
        (V(discovery) takes M(cms.patching.ec2_patch_scan) C(instances), V(backup) takes M(cms.patching.ami_backup_verify) C(backups)).
    type: list
    elements: dict
    default: []
  caller_arn:
    description: Who ran it (from STS C(GetCallerIdentity)).
    type: str
  awx_job_id:
    description: The AWX/AAP job id, when there is one.
    type: str
  started_at:
    description: ISO time this invocation started; the report keeps the first invocation's, and each wave record keeps its own.
    type: str
  dry_run:
    description:
      - The invocation is a dry run (C(ansible_check_mode)) although this call writes its report (C(check_mode=false)).
        A dry run decides nothing, so no instance is made C(not_patched).
    type: bool
    default: false
  wave:
    description:
      - The record of one patching wave (an Ansible C(serial) batch), given by the patching role after the wave ran.
      - The report computes the wave's number and size as Ansible cut the play, and whether Ansible ends the play after it
        (more than O(wave.max_fail_percentage) of the batch failed, or every host of the batch failed, whatever
        C(max_fail_percentage) says). When it does, every instance left without a patch result ends C(not_patched) with
        the reason C(stopped_by_max_fail), since no later task runs to say so.
    type: dict
    suboptions:
      batch_hosts:
        description: C(ansible_play_batch), the hosts of this batch that run tasks.
        type: list
        elements: str
        required: true
      play_hosts:
        description: C(ansible_play_hosts_all), every host of the play in play order (Ansible cuts the batches from them).
        type: list
        elements: str
        required: true
      instance_ids:
        description: The instance ids of O(wave.batch_hosts).
        type: list
        elements: str
        default: []
      serial:
        description: The play's C(serial) (a number, a percentage or a list of them).
        type: raw
      max_fail_percentage:
        description: The play's C(max_fail_percentage); null means none.
        type: int
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Record the backup phase
  cms.patching.run_report:
    run_id: "{{ cms_patching_run_id }}"
    phase: backup
    instances:
      - instance_id: i-0123456789abcdef0
        backup: {image_id: ami-0123456789abcdef0, verified: true, status: created}
  delegate_to: localhost
  run_once: true
  check_mode: false
"""

RETURN = r"""
directory:
  description: The run's report directory.
  returned: always
  type: str
paths:
  description: Paths of the C(json), C(csv) and C(html) files.
  returned: always
  type: dict
summary:
  description: Counts of instances by final status, and the total.
  returned: always
  type: dict
  sample: {"skipped": 2, "discovered": 0, "backed_up": 0, "not_patched": 1, "patched": 20, "failed": 1, "rolled_back": 1, "total": 25}
stop:
  description: Why the run's patching stopped before every instance was patched (C(reason), C(wave) and details), or null.
  returned: when not in check mode
  type: dict
  sample: {"reason": "stopped_by_max_fail", "wave": 2, "of": 4, "failed": 1, "batch_size": 2, "max_fail_percentage": 10, "not_patched": 7}
headline:
  description: One sentence saying how the run ended and, when it stopped, why.
  returned: when not in check mode
  type: str
  sample: "Stopped after wave 2 of 4: 1 of 2 hosts failed (50%), above max_fail_percentage 10%; 7 instances not patched (stopped_by_max_fail)."
ansible_facts:
  description:
    - C(cms_patching_run_stop) and C(cms_patching_run_headline), the same as RV(stop) and RV(headline), for the host the
      task's facts go to (the patching role's record step delegates them to C(localhost)).
  returned: when not in check mode
  type: dict
  sample: {"cms_patching_run_stop": null, "cms_patching_run_headline": "Finished: all 6 waves ran; 20 patched, 0 rolled back, 0 failed."}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cms.patching.plugins.module_utils.report import entries_from_results, run_directory, write_report


def record(module):
    p = module.params
    run = {k: p[k] for k in ("run_id", "slice", "caller_arn", "awx_job_id", "started_at")}
    run["check_mode"] = module.check_mode or p["dry_run"] or None
    try:
        directory = run_directory(p["report_dir"], p["run_id"], p["slice"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    if module.check_mode:
        return dict(changed=False, directory=directory, summary={},
                    paths={n: os.path.join(directory, f"report.{n}") for n in ("json", "csv", "html")})
    try:
        instances = p["instances"] + (entries_from_results(p["phase"], p["results"]) if p["results"] else [])
    except (ValueError, KeyError) as e:
        module.fail_json(msg=f"invalid results for phase {p['phase']}: {e}")
    bad = [i for i, e in enumerate(instances) if not e.get("instance_id")]
    if bad:
        module.fail_json(msg=f"instances[{bad[0]}] has no instance_id")
    try:
        result = write_report(p["report_dir"], run, instances, p["phase"], p["wave"])
    except OSError as e:
        module.fail_json(msg=f"cannot write the report in {directory}: {e.strerror or e}")
    # On the controller (the task's delegate_facts): the final play of playbooks/patch.yml fails a run a gate stopped.
    return dict(changed=True, ansible_facts={"cms_patching_run_stop": result["stop"], "cms_patching_run_headline": result["headline"]}, **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            report_dir=dict(type="path", default="reports"),
            run_id=dict(type="str", required=True),
            slice=dict(type="str"),
            phase=dict(type="str"),
            instances=dict(type="list", elements="dict", default=[]),
            results=dict(type="list", elements="dict", default=[]),
            caller_arn=dict(type="str"),
            awx_job_id=dict(type="str"),
            started_at=dict(type="str"),
            dry_run=dict(type="bool", default=False),
            wave=dict(type="dict", options=dict(
                batch_hosts=dict(type="list", elements="str", required=True),
                play_hosts=dict(type="list", elements="str", required=True),
                instance_ids=dict(type="list", elements="str", default=[]),
                serial=dict(type="raw"),
                max_fail_percentage=dict(type="int"),
            )),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**record(module))


if __name__ == "__main__":
    main()
