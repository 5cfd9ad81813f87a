# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ec2_preflight: what must hold before any image is made, for one account and region.

Per instance (a failure is a reason code, `preflight_*`, and no image is made for it):
- agent_version: the SSM agent (DescribeInstanceInformation AgentVersion) is at least 2.0.834.0, the minimum
  AWS-RunPatchBaseline needs; compared number by number, never as text;
- disk: the free-space pre-check of the patching role (root file system, and /var on Linux; C: on Windows) against
  min_free_mb, sent through the batched command runner (one SendCommand per 50 instances of a platform);
- kms (a warning, never a block): the KMS key of each encrypted EBS volume is enabled and readable with DescribeKey
  through this account's credentials. Only EBS's own use of the key proves its grants, so nothing is refused on it.
Per account and region (one line for the run): quota, the room left under the AMIs quota (EC2, L-B665C33B) and the
Snapshots per Region quota (EBS, L-309BACF6), read with Service Quotas GetServiceQuota, against what this run makes
(one image per instance, one snapshot per EBS volume). A quota that cannot be read is a note, not a failure.
"""

from __future__ import annotations

import re
import time

from ansible_collections.cms.patching.plugins.module_utils import readers
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.command_run import DOCUMENTS, run_commands
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    AwsCallError, AwsErrorHandler, PatchingError, aws_error_message, is_aws_error, require_positive, validate_instance_ids,
)

CHECKS = ("disk", "agent_version", "kms", "quota")
# The checks that need the SSM agent's record (its version; the platform the free-space command is sent for).
AGENT_CHECKS = {"disk", "agent_version"}
# The minimum agent for AWS-RunPatchBaseline (Patch Manager prerequisites: "SSM Agent version 2.0.834.0 or later").
MIN_AGENT_VERSION = "2.0.834.0"
VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")
STEP = "preflight"
# Reason codes (report: `reason` of an instance that failed pre-flight; `preflight.warnings[].code`).
REASONS = {"agent_version": "preflight_agent_version", "disk": "preflight_disk"}
KMS_WARNING = "preflight_kms_key"
# A check that could not be made (the command never reached the instance, SSM does not know it): a warning, not a
# failure. Nothing proves the instance wrong, and the wave's own pre-check fails it (undeliverable, ...) before any patch.
NOT_CHECKED = "preflight_not_checked"
# Service Quotas codes (Service Quotas console; EC2 user guide "Amazon EC2 service quotas", EBS user guide "Quotas for
# Amazon EBS"). The AMIs quota counts available, pending and disabled AMIs and those in the Recycle Bin.
QUOTAS = {"amis": ("ec2", "L-B665C33B", "AMIs"), "snapshots": ("ebs", "L-309BACF6", "Snapshots per Region")}


def disk_commands(platform, min_free_mb):
    """The patching role's free-space pre-check (roles/patching/vars/main.yml, __patching_defaults.precheck_commands),
    rendered for `min_free_mb`: the same text, so the backup play refuses exactly what the wave's pre-check would."""
    need = int(min_free_mb)
    if platform == "windows":
        return [f"$free = [math]::Floor((Get-PSDrive -Name C).Free / 1MB); if ($free -lt {need}) "
                f"{{ Write-Output \"only $free MB free on C:, need {need}\"; exit 1 }}"]
    return [f"for fs in / /var; do avail=$(df -Pm \"$fs\" | awk 'NR==2 {{print $4}}'); if [ \"$avail\" -lt {need} ]; "
            f"then echo \"only ${{avail}} MB free on $fs, need {need}\"; exit 1; fi; done"]


def version_tuple(text):
    """'2.0.834.0' -> (2, 0, 834, 0); None when it is not a dotted version."""
    text = str(text or "").strip()
    return tuple(int(p) for p in text.split(".")) if VERSION_RE.match(text) else None


def agent_too_old(version, minimum=MIN_AGENT_VERSION):
    """True when `version` is below `minimum`, numerically (2.0.1000.0 is newer than 2.0.834.0). Unreadable: too old."""
    have, need = version_tuple(version), version_tuple(minimum)
    if have is None:
        return True
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) < need + (0,) * (width - len(need))


def validate(params):
    """Every input error as one line, before any AWS call."""
    ids = list(params.get("instance_ids") or [])
    if not ids:
        raise PatchingError("instance_ids is empty")
    validate_instance_ids(ids)
    unknown = [c for c in params.get("checks") or [] if c not in CHECKS]
    if unknown:
        raise PatchingError(f"unknown check(s) {', '.join(map(repr, unknown))}: use {', '.join(CHECKS)}")
    if version_tuple(params.get("min_agent_version") or MIN_AGENT_VERSION) is None:
        raise PatchingError(f"min_agent_version must be a dotted version such as {MIN_AGENT_VERSION}, got {params.get('min_agent_version')!r}")
    require_positive(params, ("min_free_mb", "command_timeout", "poll_interval"))
    if params.get("planned_images") is not None and int(params["planned_images"]) < 0:
        raise PatchingError(f"planned_images must be 0 or more, got {params['planned_images']}")
    return ids


# ---------------------------------------------------------------- reads

@AwsErrorHandler.common_error_handler("ssm:DescribeInstanceInformation")
def read_agents(ssm, ids):
    return readers.read_agents(ssm, ids)


@AwsErrorHandler.common_error_handler("ec2:DescribeVolumes")
def read_volumes(ec2, ids):
    """{instance id: [{volume_id, encrypted, kms_key_id}]} of the EBS volumes attached to the instances."""
    found = {i: [] for i in ids}
    for chunk in chunked(ids, EC2_ID_BATCH):
        for vol in paginate(ec2, "describe_volumes", "Volumes", Filters=[{"Name": "attachment.instance-id", "Values": chunk}]):
            for att in vol.get("Attachments") or []:
                if att.get("InstanceId") in found:
                    found[att["InstanceId"]].append(dict(volume_id=vol["VolumeId"], encrypted=bool(vol.get("Encrypted")),
                                                         kms_key_id=vol.get("KmsKeyId")))
    return found


def key_states(kms, key_ids):
    """{key id: (KeyState or None, error or None)}: one DescribeKey per distinct key; a refusal is an answer too."""
    states = {}
    for key in sorted(set(key_ids)):
        try:
            meta = kms.describe_key(KeyId=key)["KeyMetadata"]
            states[key] = (meta.get("KeyState"), None)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            states[key] = (None, aws_error_message(e, "kms:DescribeKey", key))
    return states


def count_owned(ec2):
    """(AMIs, snapshots) this account owns in the region: what the AMIs and snapshots quotas count."""
    images = paginate(ec2, "describe_images", "Images", Owners=["self"], IncludeDisabled=True)
    snapshots = paginate(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"])
    return len(images), len(snapshots)


def read_quota(quotas, name):
    """(applied value, note): the note says why it could not be read (then the value is None)."""
    service, code, title = QUOTAS[name]
    try:
        return float(quotas.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"]), None
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        return None, f"{title} quota ({service} {code}) not read, not checked: {aws_error_message(e, 'servicequotas:GetServiceQuota')}"


# ---------------------------------------------------------------- checks

def check_quotas(ec2, quotas, planned_images, planned_snapshots, region, account=""):
    """{quotas: {amis|snapshots: {quota_code, value, used, room, planned}}, error: one line or None, notes: [...]}."""
    out = {"quotas": {}, "error": None, "notes": []}
    values = {}
    for name in QUOTAS:
        values[name], note = read_quota(quotas, name)
        if note:
            out["notes"].append(note)
    if all(v is None for v in values.values()):
        return out
    try:
        used = dict(zip(QUOTAS, count_owned(ec2)))
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        out["notes"].append(f"quota use not counted, not checked: {aws_error_message(e, 'ec2:DescribeImages/DescribeSnapshots')}")
        return out
    planned = {"amis": planned_images, "snapshots": planned_snapshots}
    short = []
    for name, value in values.items():
        if value is None:
            continue
        service, code, title = QUOTAS[name]
        room = max(int(value) - used[name], 0)
        out["quotas"][name] = dict(quota_code=code, service_code=service, value=int(value), used=used[name], room=room, planned=planned[name])
        if room < planned[name]:
            short.append(f"{title} quota ({code}) {int(value)}, {used[name]} in use: room for {room}, this run makes {planned[name]}")
    if short:
        where = f"account {account} {region}" if account else region
        out["error"] = f"preflight_quota: {where}: " + "; ".join(short)
    return out


def check_disk(ssm, params, platforms, check_mode, clock, sleep, send_client, ec2):
    """{instance id: command result} of the free-space check (nothing sent in check mode)."""
    targets = [dict(instance_id=iid, platform=platform, commands=disk_commands(platform, params["min_free_mb"]), services=[])
               for iid, platform in platforms.items()]
    if not targets:
        return {}
    if check_mode:
        return {t["instance_id"]: dict(outcome="not_run", error="check mode: the free-space check sends a command") for t in targets}
    command = dict(step=STEP, run_id=params.get("run_id"), targets=targets, instance_ids=None, commands=None, services=None,
                   execution_timeout=params["command_timeout"], poll_interval=params["poll_interval"],
                   delivery_timeout=params.get("delivery_timeout") or 600, max_concurrency="100%", max_errors="100%",
                   output_s3_bucket_name=None, output_s3_key_prefix=None, cloudwatch_output=None, wait=True)
    results = run_commands(ssm, command, False, clock, sleep, send_client, ec2=ec2)["results"]
    return {r["instance_id"]: r for r in results}


def judge(iid, checks, agent, minimum, disk, volumes, keys):
    """One instance's pre-flight entry: {instance_id, passed, reason, failures, error, warnings, agent_version, disk}."""
    failures, errors, warnings = [], [], []
    # A quota-only call (discovery's, before the plan tag) reads no agent: nothing to say about it.
    if AGENT_CHECKS & set(checks) and (agent is None or agent.get("ping_status") in (None, "Inactive")):
        warnings.append(dict(code=NOT_CHECKED, message="SSM does not manage the instance (no DescribeInstanceInformation record): not checked"))
    elif "agent_version" in checks and agent_too_old(agent.get("agent_version"), minimum):
        failures.append(REASONS["agent_version"])
        errors.append(f"SSM agent {agent.get('agent_version') or 'version unknown'} is older than {minimum}, the minimum AWS-RunPatchBaseline needs")
    if disk is not None and disk.get("outcome") == "failed":  # the check ran and found too little room (or failed itself)
        failures.append(REASONS["disk"])
        detail = (disk.get("output_excerpt") or "").strip() or disk.get("error") or disk.get("outcome")
        errors.append(f"free-space check failed: {detail}")
    elif disk is not None and disk.get("outcome") not in ("success", "not_run"):
        warnings.append(dict(code=NOT_CHECKED, message=f"free-space check {disk.get('outcome')}: {disk.get('error') or 'no result'}"))
    for vol in volumes or []:
        key = vol.get("kms_key_id")
        if not (vol.get("encrypted") and key):
            continue
        state, error = keys.get(key, (None, "not read"))
        if error:
            warnings.append(dict(code=KMS_WARNING, message=f"{vol['volume_id']}: KMS key not readable with DescribeKey: {error}"))
        elif state != "Enabled":
            warnings.append(dict(code=KMS_WARNING, message=f"{vol['volume_id']}: KMS key {key} is {state}: EBS cannot use it for the image's snapshots"))
    return dict(instance_id=iid, passed=not failures, reason=failures[0] if failures else None, failures=failures,
                error="; ".join(errors) or None, warnings=warnings, agent_version=(agent or {}).get("agent_version"),
                disk=None if disk is None else {k: disk.get(k) for k in ("outcome", "command_id", "output_excerpt", "error")})


def report_entry(result):
    """The run report's entry for one instance: its `preflight` section; a failure ends `failed` with its reason code
    (nothing was changed on it, and no image is made: it needs a look, like a failed pre-check)."""
    entry = {"instance_id": result["instance_id"],
             "preflight": {k: result[k] for k in ("passed", "failures", "error", "warnings", "agent_version")}}
    if not result["passed"]:
        entry.update(final_status="failed", reason=result["reason"])
    return entry


def run_preflight(clients, params, check_mode, clock=time.monotonic, sleep=time.sleep):
    """The module's whole job. clients(service, max_attempts=None) gives this account and region's clients."""
    ids = validate(params)
    checks = list(params.get("checks") or CHECKS)
    minimum = params.get("min_agent_version") or MIN_AGENT_VERSION
    ssm, ec2 = clients("ssm"), clients("ec2")
    agents = read_agents(ssm, ids) if AGENT_CHECKS & set(checks) else {}
    platforms = {}
    for iid in ids:
        platform = readers.platform_of(agent=agents.get(iid)) if iid in agents else None
        if platform in DOCUMENTS and agents[iid].get("ping_status") != "Inactive":
            platforms[iid] = platform
    disk = check_disk(ssm, params, platforms, check_mode, clock, sleep, clients("ssm", max_attempts=1), ec2) if "disk" in checks else {}
    notes = []
    volumes = {}
    if "kms" in checks or "quota" in checks:
        try:
            volumes = read_volumes(ec2, ids)
        except AwsCallError as e:  # the optional checks then warn instead of checking; the others stand
            volumes = None
            notes.append(f"volumes not read, KMS keys and the snapshots quota not checked: {e}")
    keys = {}
    if "kms" in checks and volumes is not None:
        keys = key_states(clients("kms"), [v["kms_key_id"] for vs in volumes.values() for v in vs if v["encrypted"] and v["kms_key_id"]])
    results = [judge(iid, checks, agents.get(iid), minimum, disk.get(iid) if "disk" in checks else None,
                     (volumes or {}).get(iid) if "kms" in checks else None, keys) for iid in ids]
    account = {"region": params.get("region"), "account_id": params.get("account_id") or "", "quotas": {}, "error": None, "notes": []}
    if "quota" in checks:
        passing = [r["instance_id"] for r in results if r["passed"]]
        planned_images = len(passing) if params.get("planned_images") is None else int(params["planned_images"])
        # Unknown volumes: at least the root volume's snapshot per image.
        planned_snapshots = sum(len((volumes or {}).get(i) or []) or 1 for i in passing)
        account.update(check_quotas(ec2, clients("service-quotas"), planned_images, planned_snapshots, params.get("region"),
                                    account["account_id"]))
    account["notes"] = notes + account["notes"]
    failed = [r for r in results if not r["passed"]]
    return dict(
        changed=False, results=results, account=account, entries=[report_entry(r) for r in results],
        failed_ids=[r["instance_id"] for r in failed],
        summary=dict(total=len(results), passed=len(results) - len(failed), failed=len(failed),
                     warnings=sum(1 for r in results if r["warnings"])),
    )


def no_quota_error(result):
    """ec2_preflight fails (one line) only for the account: an instance's failure is its own result."""
    return result["account"].get("error")
