# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each patching wave ends as, per instance: the fault table of the patching contract in one place.

Every step's results are lists of per-instance dicts (instance_id, outcome or status, error). An instance
leaves the pipeline at its first failing step; a failure after the patch command ran is rolled back.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import tags as T

# Patch outcome -> (reason, whether the patch ran so a rollback is needed)
PATCH_FAILURES = {
    "failed": ("patch_failed", True),
    "timed_out": ("patch_timed_out", True),
    "cancelled": ("patch_timed_out", True),  # our own execution_timeout cancelled it mid-run
    "reboot_timeout": ("reboot_timeout", True),
    "noncompliant": ("compliance_not_clean", True),
    "undeliverable": ("undeliverable", False),
    "delivery_timed_out": ("delivery_timed_out", False),
    "terminated": ("patch_not_started", False),  # MaxErrors stopped it before it started
    # Its status could not be read (AWS errors until the end, or unread when execution_timeout cancelled it): it may
    # have run or not. Or it succeeded and what it left could not be read (its patch state, a BaselineOverride run's
    # stdout). No rollback on a guess; the backup stays (the run deletes none) for a rollback.yml after a look.
    "state_unknown": ("state_unknown", False),
    "not_found": ("not_found", False),  # EC2 does not know the instance (or it is terminated): nothing sent, nothing to restore
}
PATCH_OK = ("success", "pending_reboot")
NOT_DELIVERED = ("undeliverable", "delivery_timed_out", "not_found")
DRY_RUN = ("would_run", "would_restore", "would_drain", "would_register")
# Taking the instance out of service before the patch (capacity.py, step `drain`): outcome -> reason. Nothing was
# patched; whatever was taken out is put back (step `reregister`).
DRAIN_FAILURES = {
    "drain_timed_out": "drain_timeout",  # a target still draining at patching_drain_timeout
    "drain_failed": "drain_failed",  # DeregisterTargets (or the tag recording it) failed
    "min_size": "asg_min_size",  # EnterStandby would take the desired capacity below MinSize: never patched in service
    "standby_failed": "standby_failed",  # EnterStandby refused, or the instance never reached Standby
}
# Putting it back after the health checks passed (step `register`): outcome -> (reason, whether to roll back).
REGISTER_FAILURES = {
    "unhealthy": ("lb_unhealthy", True),  # a target never healthy within patching_lb_healthy_timeout: the patch broke it
    "register_failed": ("register_failed", False),  # RegisterTargets failed: the patch is fine, the next run registers it
    "exit_failed": ("standby_exit_failed", False),  # ExitStandby failed or InService never came: same
}
NO_ROLLBACK = tuple(reason for reason, rollback in REGISTER_FAILURES.values() if not rollback)


def by_id(results):
    return {r["instance_id"]: r for r in results or []}


def passed(results, ok=("success",)):
    """Instance ids whose step outcome is acceptable (check mode's would_run passes, so a dry run shows the plan)."""
    return [r["instance_id"] for r in results or [] if r.get("outcome", r.get("status")) in tuple(ok) + DRY_RUN]


def outcome_of(instance_id, gate, precheck, patch, restart, health, drain=None, register=None):
    """(reason, patch_ran) for the first failing step, or (None, ran) when every step passed."""
    if instance_id not in gate:
        return "no_verified_backup", False
    pre = precheck.get(instance_id)
    if pre and pre.get("outcome") in NOT_DELIVERED:
        # The agent never got the pre-check: it would not get the patch either. Nothing ran.
        return PATCH_FAILURES[pre["outcome"]][0], False
    if pre and pre.get("outcome") not in ("success",) + DRY_RUN:
        return "precheck_failed", False
    out = (drain or {}).get(instance_id)
    if out and out.get("outcome") not in ("success",) + DRY_RUN:
        return DRAIN_FAILURES.get(out.get("outcome"), "drain_failed"), False
    result = patch.get(instance_id)
    if result is None:
        return "not_patched", False
    if result.get("outcome") in PATCH_FAILURES:
        return PATCH_FAILURES[result["outcome"]]
    if result.get("outcome") not in PATCH_OK + DRY_RUN:
        return "patch_failed", True
    svc = restart.get(instance_id)
    if svc and svc.get("outcome") not in ("success",) + DRY_RUN:
        return "service_restart_failed", True
    check = health.get(instance_id)
    if check and check.get("outcome") not in ("success",) + DRY_RUN:
        return "health_check_failed", True
    back = (register or {}).get(instance_id)
    if back and back.get("outcome") not in ("success",) + DRY_RUN:
        return REGISTER_FAILURES.get(back.get("outcome"), ("register_failed", False))[0], True
    return None, True


def needs_rollback(instance_ids, gate, precheck, patch, restart, health, drain=None, register=None):
    """Instances whose validation failed after the patch ran, with the image to restore."""
    gate, precheck, patch, restart, health = by_id(gate), by_id(precheck), by_id(patch), by_id(restart), by_id(health)
    drain, register = by_id(drain), by_id(register)
    todo = []
    for iid in instance_ids:
        reason, ran = outcome_of(iid, gate, precheck, patch, restart, health, drain, register)
        if reason and ran and reason not in NO_ROLLBACK and gate.get(iid, {}).get("image_id"):
            todo.append({"instance_id": iid, "image_id": gate[iid]["image_id"]})
    return todo


def wave_entries(instance_ids, gate, precheck, patch, restart, health, rollback, check_mode=False, drain=None, register=None):
    """Report entries (with final_status and reason) for every instance of a wave."""
    gate, precheck, patch, restart, health, rollback = (by_id(x) for x in (gate, precheck, patch, restart, health, rollback))
    drain, register = by_id(drain), by_id(register)
    entries = []
    for iid in instance_ids:
        reason, ran = outcome_of(iid, gate, precheck, patch, restart, health, drain, register)
        entry = {"instance_id": iid, "patch": _patch_section(patch.get(iid)), "reason": reason}
        if iid in restart:
            entry["services"] = {"outcome": restart[iid].get("outcome"), "error": restart[iid].get("error")}
        failures = [reason] if reason in ("compliance_not_clean", "service_restart_failed", "health_check_failed", "reboot_timeout",
                                          "lb_unhealthy") else []
        if ran:
            # register_failed / standby_exit_failed: validated, only putting it back in service failed
            entry["validation"] = {"passed": not reason or reason in NO_ROLLBACK, "failures": failures}
        restored = rollback.get(iid)
        entry["rollback"] = {"performed": restored is not None, "status": (restored or {}).get("status"),
                             "image_id": (restored or {}).get("image_id"), "error": (restored or {}).get("error")}
        if check_mode:
            entry.pop("reason")  # a dry run decides nothing; earlier phases keep their status
        elif reason is None:
            entry["final_status"] = "patched"
        elif restored and restored.get("status") == "succeeded":
            entry["final_status"] = "rolled_back"
        elif restored:
            entry.update(final_status="failed", reason="rollback_failed", failed_step=reason)
        else:
            entry["final_status"] = "failed"
        entries.append(entry)
    return entries


def _patch_section(result):
    if not result:
        return None
    keys = ("outcome", "command_id", "status", "status_details", "compliance_before", "compliance_after", "output_excerpt", "error",
            "output_location", "recovery")
    section = {k: result.get(k) for k in keys}
    section["output_truncated"] = bool(result.get("output_truncated"))  # the excerpt shows less than the whole output
    return section


RESTART_TAG = T.RESTART_SERVICES


def host_commands(step, platform, host, defaults):
    """(commands, services) one host runs in a validation step; host and group vars override the role's defaults."""
    if step == "precheck":
        commands = list((defaults.get("precheck_commands") or {}).get(platform) or [])
        return commands + list(host.get("patching_precheck_extra_commands") or defaults.get("precheck_extra_commands") or []), []
    if step == "restart":
        services = host.get("patching_restart_services")
        if services is None:
            tag = ((host.get("cms_patching_discovery") or {}).get("tags") or {}).get(RESTART_TAG, "")
            services = [s.strip() for s in tag.split(",") if s.strip()] or defaults.get("restart_services") or []
        return [], list(services)
    if step == "health":
        checks = host.get("patching_health_checks")
        return list(defaults.get("health_checks") or [] if checks is None else checks), []
    raise ValueError(f"unknown step {step}")
