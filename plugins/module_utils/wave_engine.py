# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ssm_patch_wave: one patching wave in one call, on top of the runner, restore and fault-table code.

Per partition (account x region x role): putting back what an earlier run left out of service (recover) -> backup gate
-> pre-checks -> out of service (drain: ELBv2 deregistration or Auto Scaling standby) -> patch -> service restarts ->
health checks -> back in service (register) -> rollback of what failed after the patch ran -> back in service of
everything still out (reregister) -> status tags. An instance leaves at its first failing step; what it
ends as is decided by the fault table (waves.py) alone. Partitions run concurrently in a bounded thread pool, each
with its own session and clients, so a fleet in several regions and accounts waits once per step, not once per
partition.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils import capacity, gates
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.backup.images import find_verified_backups
from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.command_run import run_commands, validate as validate_command_step
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    PatchingError, aws_error_message, is_aws_error, require_positive, validate_instance_ids,
)
from ansible_collections.cms.patching.plugins.module_utils.patch_run import run_patch, validate as validate_patch
from ansible_collections.cms.patching.plugins.module_utils.root_restore import run_restore
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import resolve_run_id
from ansible_collections.cms.patching.plugins.module_utils.waves import PATCH_OK, by_id, needs_rollback, passed, wave_entries

STEPS = ("recover", "gate", "precheck", "drain", "patch", "restart", "health", "register", "rollback", "reregister")
MODES = ("patch", "restore", "recover")
DEFAULT_MAX_AGE_HOURS = 24  # mode=patch; mode=restore takes a backup of any age unless told otherwise
COMMAND_STEPS = {"precheck": "precheck_commands", "restart": "restart_services", "health": "health_checks"}
# What counts as passing each step (check mode's would_run / would_restore pass too: a dry run shows the plan).
STEP_OK = {"precheck": ("success",), "patch": PATCH_OK, "restart": ("success",), "health": ("success",),
           "rollback": ("succeeded",), "recover": ("success",), "drain": ("success",), "register": ("success",),
           "reregister": ("success",)}
CAPACITY_STEPS = ("drain", "register", "reregister")
# ec2:CreateTags takes up to 1,000 resource ids per call (EC2 API reference, CreateTags); 500 as ec2_batch_tag.
TAG_BATCH = 500
# Options handed to ssm_patch_run's code unchanged.
PATCH_OPTIONS = ("operation", "reboot_option", "document", "pre_install_hook_doc_name", "post_install_hook_doc_name",
                 "on_exit_hook_doc_name", "install_override_list", "baseline_override", "execution_timeout",
                 "agent_online_timeout", "agent_check_interval", "agent_recovery", "delivery_timeout", "max_concurrency", "max_errors",
                 "output_s3_bucket_name", "output_s3_key_prefix", "cloudwatch_output", "poll_interval")


def utc_now():
    return datetime.now(timezone.utc)


def iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- input

def normalise(instance, default_region):
    """One instance of the `instances` option with every key present."""
    return dict(instance_id=instance.get("instance_id"), region=instance.get("region") or default_region,
                account_id=str(instance.get("account_id") or ""), role_arn=instance.get("role_arn") or "",
                external_id=instance.get("external_id") or "", platform=instance.get("platform"),
                precheck_commands=list(instance.get("precheck_commands") or []),
                restart_services=list(instance.get("restart_services") or []),
                health_checks=list(instance.get("health_checks") or []),
                backup_planned=bool(instance.get("backup_planned")),
                target_groups=[dict(tg) for tg in instance.get("target_groups") or []],
                asg_name=instance.get("asg_name") or None, asg_mode=instance.get("asg_mode") or "in_place",
                # The capacity tags as last read (discovery's); None: the wave reads them itself.
                capacity_tags=None if instance.get("capacity_tags") is None else dict(instance["capacity_tags"]))


def validate(params):
    """Every input error as one line, before any AWS call; returns the normalised instances."""
    instances = [normalise(i, params.get("region")) for i in params.get("instances") or []]
    if not instances:
        raise PatchingError("instances is empty")
    ids = [i["instance_id"] for i in instances]
    validate_instance_ids(ids)
    no_region = [i["instance_id"] for i in instances if not i["region"]]
    if no_region:
        raise PatchingError(f"no region for {', '.join(no_region)}: give each instance a region, or the region option")
    if params.get("mode", "patch") not in MODES:
        raise PatchingError(f"unknown mode {params.get('mode')!r}: use one of {', '.join(MODES)}")
    require_positive(params, ("command_timeout", "rollback_timeout", "max_backup_age_hours", "partition_concurrency", "drain_timeout",
                              "lb_healthy_timeout", "standby_timeout"))
    bad_mode = sorted({i["asg_mode"] for i in instances} - set(capacity.ASG_MODES))
    if bad_mode:
        raise PatchingError(f"unknown asg_mode {bad_mode[0]!r}: use one of {', '.join(capacity.ASG_MODES)}")
    no_arn = [i["instance_id"] for i in instances if any(not tg.get("arn") for tg in i["target_groups"])]
    if no_arn:
        raise PatchingError(f"a target group without arn for {', '.join(no_arn)}: give each target group its arn, name and port")
    for inst in instances:
        inst["drain_timeout"] = params.get("drain_timeout")  # None: per instance, its largest deregistration delay + 60 s
    validate_patch(dict(patch_params(params, ids, "x"), snapshot_id=params.get("snapshot_id")))
    for step in COMMAND_STEPS:
        targets = command_targets(step, instances)
        if targets:
            validate_command_step(command_params(params, step, targets, "x"))
    return instances


def partitions(instances):
    """[(key, [instance])] per (account, region, role, external id), in a stable order."""
    groups = {}
    for inst in instances:
        groups.setdefault((inst["account_id"], inst["region"], inst["role_arn"], inst["external_id"]), []).append(inst)
    return sorted(groups.items(), key=lambda kv: kv[0])


# ---------------------------------------------------------------- step parameters

def patch_params(params, instance_ids, run_id, snapshot_id=None):
    out = {k: params.get(k) for k in PATCH_OPTIONS}
    out.update(instance_ids=list(instance_ids), run_id=run_id, snapshot_id=snapshot_id, wait=True)
    return out


def command_targets(step, instances):
    """ssm_command_run targets of a step: instances with nothing to run in it are left out (they pass it)."""
    key = COMMAND_STEPS[step]
    targets = []
    for inst in instances:
        things = inst[key]
        if things:
            services, commands = (things, []) if step == "restart" else ([], things)
            targets.append(dict(instance_id=inst["instance_id"], platform=inst["platform"], commands=commands, services=services))
    return targets


def command_params(params, step, targets, run_id):
    # As the role's ssm_command_run steps always had: SendCommand defaults besides the command timeout and poll.
    return dict(step=step, run_id=run_id, targets=targets, instance_ids=None, commands=None, services=None,
                execution_timeout=params["command_timeout"], poll_interval=params["poll_interval"],
                delivery_timeout=params["delivery_timeout"], max_concurrency="100%", max_errors="100%",
                output_s3_bucket_name=None, output_s3_key_prefix=None, cloudwatch_output=None, wait=True)


def restore_params(params, todo, run_id):
    return dict(instances=todo, delete_replaced_root_volume=False, run_id=run_id, wait=True,
                wait_timeout=params["rollback_timeout"], agent_online_timeout=params["agent_online_timeout"],
                poll_interval=params["poll_interval"])


# ---------------------------------------------------------------- AWS side (replaced by fakes in unit tests)

class Clients:
    """The clients of one partition, made on first use inside its own thread (an assumed role is assumed there)."""

    def __init__(self, session):
        self._session = session
        self._made = {}

    def get(self, service, max_attempts=None):
        if (service, max_attempts) not in self._made:
            self._made[(service, max_attempts)] = self._session.client(service, max_attempts=max_attempts)
        return self._made[(service, max_attempts)]


class AwsSteps:
    """The real steps: the same module_utils code the single-step modules run."""

    def __init__(self, clock=time.monotonic, sleep=time.sleep):
        self.clock, self.sleep = clock, sleep

    def gate(self, clients, instance_ids, max_age_hours):
        return find_verified_backups(clients.get("ec2"), instance_ids, max_age_hours)

    def command(self, clients, params, check_mode):
        # SendCommand goes through a client that never retries by itself: the runner retries it without duplicates.
        # The EC2 client tells an instance EC2 does not know (not_found) from one SSM does not know (undeliverable).
        return run_commands(clients.get("ssm"), params, check_mode, self.clock, self.sleep, clients.get("ssm", max_attempts=1),
                            ec2=clients.get("ec2"))["results"]

    def patch(self, clients, params, check_mode):
        return run_patch(clients.get("ssm"), params, check_mode, self.clock, self.sleep, clients.get("ssm", max_attempts=1),
                         ec2=clients.get("ec2"))["results"]

    def restore(self, clients, params, check_mode):
        return run_restore(clients.get("ec2"), clients.get("ssm"), params, check_mode, self.clock, self.sleep)["results"]

    def tag(self, clients, resource_ids, tags):
        ec2 = clients.get("ec2")
        for chunk in chunked(resource_ids, TAG_BATCH):
            ec2.create_tags(Resources=chunk, Tags=[{"Key": k, "Value": str(v)} for k, v in tags.items()])

    def _capacity(self, clients, params):
        return capacity.Capacity(clients, self.clock, self.sleep, params["poll_interval"])

    def capacity_tags(self, clients, instance_ids):
        return capacity.read_capacity_tags(clients.get("ec2"), instance_ids)

    def recover(self, clients, params, tagged):
        return capacity.recover(self._capacity(clients, params), tagged, params["standby_timeout"])

    def take_out(self, clients, params, plans):
        return capacity.take_out(self._capacity(clients, params), plans, params["standby_timeout"])

    def put_back(self, clients, params, outs):
        return capacity.put_back(self._capacity(clients, params), outs, params["lb_healthy_timeout"], params["standby_timeout"])


# ---------------------------------------------------------------- one partition

class Wave:
    """What every partition of the wave shares: options, run id, snapshot id, wave time and the step runner."""

    def __init__(self, params, check_mode, steps, now=utc_now):
        self.params = params
        self.check_mode = check_mode
        self.steps = steps
        self.now = now
        self.run_id = resolve_run_id(params.get("run_id"))
        self.mode = params.get("mode") or "patch"
        self.max_age_hours = params.get("max_backup_age_hours")
        if self.max_age_hours is None and self.mode == "patch":
            self.max_age_hours = DEFAULT_MAX_AGE_HOURS
        self.snapshot_id = params.get("snapshot_id") or str(uuid.uuid4())  # one for the whole wave: one patch set
        self.wave_time = now().strftime("%Y-%m-%dT%H:%M:%SZ")


class Partition:
    """One account x region: its steps in order, with each instance's results and step times."""

    def __init__(self, wave, instances, clients):
        self.wave = wave
        self.instances = {i["instance_id"]: i for i in instances}
        self.ids = [i["instance_id"] for i in instances]
        self.clients = clients
        self.results = {step: [] for step in STEPS}
        self.times = {iid: {} for iid in self.ids}
        self.errors = {}  # step -> partition-wide error (the step's call failed as a whole)
        self.tag_errors = []
        self.plans = {i["instance_id"]: capacity.plan(i) for i in instances}
        self.outs = {}  # iid -> what was taken out of service (take_out's result), until it is back in

    def run(self):
        if self.wave.mode == "restore":
            return self.run_restore_only()
        if self.wave.mode == "recover":
            return self.run_recover_only()
        self.run_recover()
        gate = self.step("gate", self.ids, self.run_gate)
        gated = [g["instance_id"] for g in gate]
        self.run_commands("precheck", gated)
        prechecked = passed_or_skipped(gated, self.results["precheck"], STEP_OK["precheck"])
        self.step("drain", [i for i in prechecked if self.plans[i]["mode"]], self.run_take_out)
        ready = passed_or_skipped(prechecked, self.results["drain"], STEP_OK["drain"])
        self.step("patch", ready, self.run_patch)
        patched = passed(self.results["patch"], STEP_OK["patch"])
        self.run_commands("restart", patched)
        restarted = passed_or_skipped(patched, self.results["restart"], STEP_OK["restart"])
        self.run_commands("health", restarted)
        healthy = passed_or_skipped(restarted, self.results["health"], STEP_OK["health"])
        self.step("register", [i for i in healthy if i in self.outs], self.run_put_back)
        if self.wave.params["rollback"]:
            todo = needs_rollback(self.ids, gate, *(self.results[s] for s in ("precheck", "patch", "restart", "health")),
                                  drain=self.results["drain"], register=self.results["register"])
            self.step("rollback", todo, self.run_rollback)
        # Whatever is still out of service goes back, and what was rolled back after going back is waited for again.
        rolled = {r["instance_id"] for r in self.results["rollback"]}
        self.step("reregister", [i for i in self.ids if i in self.outs and (not self.outs[i].get("back_in") or i in rolled)],
                  self.run_put_back)
        entries = self.entries()
        if self.wave.params["status_tags"] and not self.wave.check_mode:
            self.tag(entries)
        return entries

    def run_recover_only(self):
        """mode=recover (the patching role, before its waves): only put back what earlier runs' tags say they left out."""
        self.run_recover()
        entries = []
        for iid in self.ids:
            recovered = by_id(self.results["recover"]).get(iid)
            if recovered is not None:
                entries.append({"instance_id": iid, "steps": self.step_record(iid), "capacity": self.capacity_section(iid)})
        return entries

    def run_restore_only(self):
        """mode=restore (playbooks/rollback.yml): every instance with a verified backup is restored from its newest one."""
        gate = self.step("gate", self.ids, self.run_gate)
        self.step("rollback", [g for g in gate if g["image_id"]], self.run_rollback)
        entries = [restore_entry(iid, by_id(self.results["rollback"]).get(iid)) for iid in self.ids]
        for entry in entries:
            entry["steps"] = self.step_record(entry["instance_id"])
        return entries

    def step(self, name, todo, runner):
        """Run one step on `todo` (ids, or rollback dicts); its results, with the step's times on each instance."""
        if not todo:
            return []
        ids = [t["instance_id"] if isinstance(t, dict) else t for t in todo]
        started = self.wave.now()
        try:
            results = runner(todo)
        except Exception as e:  # pylint: disable=broad-except
            if not isinstance(e, PatchingError) and not is_aws_error(e):
                raise
            message = str(e) if isinstance(e, PatchingError) else aws_error_message(e, f"the {name} step")
            self.errors[name] = message
            results = failed_step_results(name, ids, message)
        ended = self.wave.now()
        for iid in ids:
            self.times[iid][name] = {"started_at": iso(started), "ended_at": iso(ended)}
        self.results[name] = results
        return results

    def run_gate(self, ids):
        """Instances that pass the gate, each with the image a rollback would restore (None: no rollback possible)."""
        found = self.wave.steps.gate(self.clients, ids, self.wave.max_age_hours)
        gate = []
        for iid in ids:
            image = (found.get(iid) or {}).get("image_id")
            if self.wave.mode == "restore":
                gate += [{"instance_id": iid, "image_id": image}] if image else []
                continue
            # In check mode nothing was backed up: what the backup phase would back up passes, so a dry run shows the
            # whole plan. require_backup: false is the explicit override: patch without a backup (and no rollback).
            if image or (self.wave.check_mode and self.instances[iid]["backup_planned"]) or not self.wave.params["require_backup"]:
                gate.append({"instance_id": iid, "image_id": image})
        return gate

    def run_commands(self, name, ids):
        targets = command_targets(name, [self.instances[i] for i in ids])
        self.step(name, [t["instance_id"] for t in targets],
                  lambda _ids: self.wave.steps.command(self.clients, command_params(self.wave.params, name, targets, self.wave.run_id),
                                                       self.wave.check_mode))

    def run_patch(self, ids):
        params = patch_params(self.wave.params, ids, self.wave.run_id, self.wave.snapshot_id)
        return self.wave.steps.patch(self.clients, params, self.wave.check_mode)

    def run_rollback(self, todo):
        return self.wave.steps.restore(self.clients, restore_params(self.wave.params, todo, self.wave.run_id), self.wave.check_mode)

    def run_recover(self):
        """Put back what an earlier (killed) run left out of service, as its tags say, before anything else."""
        unknown = [i for i in self.ids if self.instances[i]["capacity_tags"] is None]
        if unknown:
            try:
                read = self.wave.steps.capacity_tags(self.clients, unknown)
            except Exception as e:  # pylint: disable=broad-except
                if not isinstance(e, PatchingError) and not is_aws_error(e):
                    raise
                # Unread: the wave goes on; its own drain records the same target groups again and puts them back.
                self.errors["recover"] = str(e) if isinstance(e, PatchingError) else aws_error_message(e, "ec2:DescribeInstances")
                read = {}
            for iid in unknown:
                self.instances[iid]["capacity_tags"] = read.get(iid)
        tagged = {i: self.instances[i]["capacity_tags"] for i in self.ids
                  if any(self.instances[i]["capacity_tags"] and self.instances[i]["capacity_tags"].get(k) for k in T.CAPACITY_KEYS)}
        if tagged:
            self.step("recover", list(tagged), lambda _ids: self.recovered(tagged))

    def recovered(self, tagged):
        if self.wave.check_mode:
            return [{"instance_id": i, "outcome": "would_register", "error": None} for i in tagged]
        return self.wave.steps.recover(self.clients, self.wave.params, tagged)

    def run_take_out(self, ids):
        if self.wave.check_mode:  # nothing is deregistered or put in standby: the entries say what would be
            return [{"instance_id": i, "outcome": "would_drain", "error": None} for i in ids]
        try:
            results = self.wave.steps.take_out(self.clients, self.wave.params, [self.plans[i] for i in ids])
        except Exception:
            # The call failed midway: anything may be out of service; put back everything it could have taken out.
            for iid in ids:
                plan = self.plans[iid]
                self.outs[iid] = dict(instance_id=iid, plan=plan, back_in=False, standby=plan["asg_name"],
                                      deregistered=[] if plan["mode"] == "standby" else plan["target_groups"])
            raise
        for res in results:
            if res.get("deregistered") or res.get("standby"):
                self.outs[res["instance_id"]] = dict(res, plan=self.plans[res["instance_id"]], back_in=False)
        return results

    def run_put_back(self, ids):
        if self.wave.check_mode:
            return [{"instance_id": i, "outcome": "would_register", "error": None} for i in ids]
        results = self.wave.steps.put_back(self.clients, self.wave.params, [self.outs[i] for i in ids])
        for res in results:
            if res.get("back_in"):
                self.outs[res["instance_id"]]["back_in"] = True
        return results

    def entries(self):
        r = self.results
        entries = wave_entries(self.ids, r["gate"], r["precheck"], r["patch"], r["restart"], r["health"], r["rollback"],
                               self.wave.check_mode, drain=r["drain"], register=r["register"])
        for entry in entries:
            entry["steps"] = self.step_record(entry["instance_id"])
            section = self.capacity_section(entry["instance_id"])
            if section:
                entry["capacity"] = section
        return entries

    def capacity_section(self, iid):
        """What the wave did to the instance's serving capacity (or would do, in check mode); None when nothing."""
        plan = self.plans[iid]
        recovered = by_id(self.results["recover"]).get(iid)
        if not plan["mode"] and not recovered:
            return None
        groups = [tg.get("name") or tg["arn"] for tg in plan["target_groups"]]
        section = dict(mode=plan["mode"], target_groups=groups, asg_name=plan["asg_name"])
        if recovered:
            section["recovered"] = {k: recovered.get(k) for k in ("outcome", "error", "registered", "exited_standby")}
        if self.wave.check_mode:
            went = iid in self.times and "drain" in self.times[iid]
            section.update(would_drain=groups if went and plan["mode"] == "drain" else [],
                           would_enter_standby=plan["asg_name"] if went and plan["mode"] == "standby" else None)
            return section
        out = self.outs.get(iid)
        drained = by_id(self.results["drain"]).get(iid) or {}
        section.update(drained=[tg.get("name") for tg in (out or {}).get("deregistered") or []],
                       standby=bool(out and out.get("standby") and drained.get("outcome") == "success"),
                       back_in_service=bool(out and out.get("back_in")) if out else None,
                       healthy=self.healthy(iid))
        return section

    def healthy(self, iid):
        """Whether its targets were last seen healthy (None when the wave never waited for them)."""
        last = by_id(self.results["reregister"]).get(iid) or by_id(self.results["register"]).get(iid)
        return None if last is None else last.get("outcome") == "success"

    def step_record(self, iid):
        """{step: {started_at, ended_at, outcome, error}} for the steps this instance went through."""
        record = {}
        for name, times in self.times[iid].items():
            res = by_id(self.results[name]).get(iid)
            if name == "gate":
                outcome, error = ("passed", None) if res else ("failed", self.errors.get("gate"))
            else:
                outcome = (res or {}).get("outcome", (res or {}).get("status"))
                error = (res or {}).get("error") or self.errors.get(name)
            record[name] = dict(times, outcome=outcome, error=error)
        return record

    def tag(self, entries):
        """Status tags, one CreateTags per final status (per 500 instances): a resumed run reads them back."""
        by_status = {}
        for entry in entries:
            if entry.get("final_status"):
                by_status.setdefault(entry["final_status"], []).append(entry["instance_id"])
        for status, ids in sorted(by_status.items()):
            tags = {T.LAST_PATCH_STATUS: status, T.LAST_PATCHED_AT: self.wave.wave_time, T.RUN_ID: self.wave.run_id}
            try:
                self.wave.steps.tag(self.clients, ids, tags)
            except Exception as e:  # pylint: disable=broad-except
                if not isinstance(e, PatchingError) and not is_aws_error(e):
                    raise
                self.tag_errors.append(str(e) if isinstance(e, PatchingError) else aws_error_message(e, "ec2:CreateTags"))


def restore_entry(iid, restored):
    """Report entry of a mode=restore instance: rolled_back, failed (rollback_failed / no_verified_backup) or planned."""
    if restored is None:
        return {"instance_id": iid, "final_status": "failed", "reason": "no_verified_backup", "rollback": {"performed": False}}
    entry = {"instance_id": iid, "rollback": {"performed": True, "status": restored.get("status"), "image_id": restored.get("image_id"),
                                              "error": restored.get("error")}}
    if restored.get("status") == "succeeded":
        entry["final_status"] = "rolled_back"
    elif restored.get("status") != "would_restore":
        entry.update(final_status="failed", reason="rollback_failed")
    return entry


def passed_or_skipped(ids, results, ok):
    """`ids` that passed a step, or had nothing to run in it."""
    ran = by_id(results)
    good = set(passed(results, ok))
    return [i for i in ids if i not in ran or i in good]


def failed_step_results(name, ids, message):
    """What a step whose call failed as a whole means per instance (the fault table then decides the rest).

    The gate and the patch leave no result (no verified backup found; nothing was sent, so no rollback); a command
    step fails its instances; a rollback that could not start failed.
    """
    if name in ("gate", "patch"):
        return []
    if name == "rollback":
        return [{"instance_id": i, "status": "failed", "error": message} for i in ids]
    return [{"instance_id": i, "outcome": "failed", "error": message} for i in ids]


# ---------------------------------------------------------------- the wave

def run_wave(params, check_mode, session_for, steps=None, now=utc_now):
    """The module's whole job: every partition of the wave, concurrently (at most partition_concurrency at a time).

    session_for(account_id, region, role_arn, external_id) gives the partition's session (an object with
    client(service, max_attempts=None)); it is called in the calling thread, its clients are made in the worker.
    """
    instances = validate(params)
    wave = Wave(params, check_mode, steps or AwsSteps(), now)
    parts = [Partition(wave, members, Clients(session_for(*key))) for key, members in partitions(instances)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), params["partition_concurrency"]))) as pool:
        done = list(pool.map(lambda p: p.run(), parts))
    order = {inst["instance_id"]: n for n, inst in enumerate(instances)}
    entries = sorted((e for part in done for e in part), key=lambda e: order[e["instance_id"]])
    return wave_result(wave, parts, entries)


def deadline_passed(not_after, now):
    """Whether the ISO time `not_after` (Z or an offset; naive means UTC) is before `now`; one line for a malformed one."""
    if not not_after:
        return False
    try:
        deadline = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
    except ValueError:
        raise PatchingError(f"cms_patching_not_after '{not_after}' is not an ISO time such as 2026-11-27T06:00:00Z") from None
    return now > (deadline if deadline.tzinfo else deadline.replace(tzinfo=timezone.utc))


def run_gated_wave(params, check_mode, session_for, gate_reader=None, steps=None, now=utc_now, watch=gates.watch):
    """mode=patch as the patching role runs it, in one call (roles/patching/README.md, "Gates").

    1. recover: put back in service what a killed run left out (O(recover), any hosts, in the plan or not);
    2. no wave after O(not_after): the wave's instances get reason deadline_passed and nothing else happens;
    3. the gates before the wave: the job's hold verdict (cms_patching_hold) or one read of the alarms and the stop
       switch; a verdict other than go starts no wave (stopped_at gate);
    4. the wave (run_wave);
    5. the bake: the gates and the patched instances' target health watched for bake_time seconds; an alarm or an
       unhealthy target restores every instance the wave patched from its pre-patch AMI (as mode=restore) and tags them
       rolled_back; any verdict other than go stops the run (stopped_at bake).
    gate_reader(targets) gives a function that reads every gate once (gates.GateReader.read), fresh sessions each time.
    The held instances' entries are the caller's (it knows which hosts the run leaves).
    """
    params = dict(params, run_id=resolve_run_id(params.get("run_id")))  # one run id for the recovery, the wave and the bake
    gate_opts = params.get("gates")
    instances = validate(params) if params.get("instances") or not params.get("recover") else []
    if params.get("recover"):
        validate(dict(params, instances=params["recover"], mode="recover"))
    if gate_opts:
        gates.validate(dict(gate_opts, poll_interval=params["poll_interval"]))
        if gate_opts.get("hold") and gate_opts["hold"] not in gates.REASONS:
            raise PatchingError(f"unknown hold verdict {gate_opts['hold']!r}: use one of {', '.join(sorted(gates.REASONS))}")
    late = bool(instances) and deadline_passed(params.get("not_after"), now())
    out = dict(changed=False, mode="patch", run_id=params["run_id"], snapshot_id=params.get("snapshot_id"),
               wave_time=None, results=[], outcomes={}, summary={"total": 0, "steps": {}, "final_status": {}}, partitions=[],
               tag_errors=[], recovered=[], deadline_passed=late, verdict="go", stopped_at=None, alarm_name=None, target_group=None,
               gate=None, bake=None)
    if params.get("recover"):
        recovered = run_wave(dict(params, mode="recover", instances=params["recover"]), check_mode, session_for, steps, now)
        out.update(changed=recovered["changed"], recovered=recovered["results"], summary=recovered["summary"], tag_errors=recovered["tag_errors"])
    if not instances:
        return out
    if late:  # as the deadline filter always did: a reason only, nothing called
        out["results"] = [{"instance_id": i["instance_id"], "reason": "deadline_passed"} for i in instances]
        return out
    hold = (gate_opts or {}).get("hold")
    if hold:
        return stopped(out, {"verdict": hold}, "gate")
    if gate_opts:
        out["gate"] = watch(gate_reader([]), 0, params["poll_interval"])
        if out["gate"]["verdict"] != "go":
            return stopped(out, out["gate"], "gate")
    result = run_wave(dict(params, mode="patch"), check_mode, session_for, steps, now)
    result.update(recovered=out["recovered"], deadline_passed=False, verdict="go", stopped_at=None, alarm_name=None, target_group=None,
                  gate=out["gate"], bake=None, changed=result["changed"] or out["changed"], tag_errors=out["tag_errors"] + result["tag_errors"])
    patched = [i for i in instances if result["outcomes"][i["instance_id"]]["final_status"] == "patched"]
    if not gate_opts or int(gate_opts.get("bake_time") or 0) <= 0 or not patched:
        return result
    result["bake"] = watch(gate_reader(patched), 0 if check_mode else int(gate_opts["bake_time"]), params["poll_interval"])
    if result["bake"]["verdict"] in ("alarm", "bake_unhealthy"):
        roll_back_after_bake(result, patched, params, check_mode, session_for, steps or AwsSteps(), now)
    if result["bake"]["verdict"] != "go":
        stopped(result, result["bake"], "bake")
    return result


def stopped(result, verdict, where):
    result.update(verdict=verdict["verdict"], stopped_at=where, alarm_name=verdict.get("alarm_name"), target_group=verdict.get("target_group"))
    return result


def roll_back_after_bake(result, patched, params, check_mode, session_for, steps, now):
    """Restore every instance the wave patched from its newest verified backup (any age, as mode=restore), tag those
    restored rolled_back (a resumed run would take them as patched), and fold the outcome into their entries: reason
    alarm (with alarm_name) or bake_unhealthy (with target_group); their failed step is the bake."""
    bake = result["bake"]
    restored = run_wave(dict(params, mode="restore", instances=patched, max_backup_age_hours=None), check_mode, session_for, steps, now)
    back = [r["instance_id"] for r in restored["results"] if r.get("final_status") == "rolled_back"]
    for key, members in partitions([i for i in patched if i["instance_id"] in back]):
        try:
            steps.tag(Clients(session_for(*key)), [i["instance_id"] for i in members], {T.LAST_PATCH_STATUS: "rolled_back"})
        except Exception as e:  # pylint: disable=broad-except
            if not isinstance(e, PatchingError) and not is_aws_error(e):
                raise
            result["tag_errors"].append(str(e) if isinstance(e, PatchingError) else aws_error_message(e, "ec2:CreateTags"))
    target_group = bake.get("target_group") if bake["verdict"] == "bake_unhealthy" else None
    entries = {e["instance_id"]: e for e in gates.bake_rollback_entries(restored["results"], bake.get("alarm_name"), target_group)}
    # The restore's own step times (rollback) join the wave's, so the report has the start and end of the rollback too.
    restore_steps = {r["instance_id"]: r.get("steps") or {} for r in restored["results"]}
    result["results"] = [dict(e, **entries[e["instance_id"]], steps=dict(e.get("steps") or {}, **restore_steps.get(e["instance_id"], {})))
                         if e["instance_id"] in entries else e for e in result["results"]]
    for iid, entry in entries.items():
        result["outcomes"][iid] = {"final_status": entry.get("final_status"), "reason": entry.get("reason"), "failed_step": "bake",
                                   "error": (entry.get("rollback") or {}).get("error")}
    result["summary"]["final_status"] = summary([], result["results"])["final_status"]
    result["changed"] = result["changed"] or restored["changed"]


def wave_result(wave, parts, entries):
    tag_errors = [e for p in parts for e in p.tag_errors]
    sent = any(r.get("command_id") for p in parts for step in ("patch", "restart", "rollback") for r in p.results[step])
    restored = any(r.get("task_id") for p in parts for r in p.results["rollback"])
    recovered = any(r.get("registered") or r.get("exited_standby") for p in parts for r in p.results["recover"])
    would = wave.check_mode and any(r.get("outcome") == "would_run" or r.get("status") == "would_restore"
                                    for p in parts for step in ("patch", "rollback") for r in p.results[step])
    return dict(
        changed=bool(sent or restored or recovered or would or (wave.mode == "patch" and not wave.check_mode and entries and wave.params["status_tags"])),
        mode=wave.mode, run_id=wave.run_id, snapshot_id=wave.snapshot_id, wave_time=wave.wave_time,
        results=entries,
        outcomes={e["instance_id"]: dict({k: e.get(k) for k in ("final_status", "reason", "failed_step")}, error=first_error(e))
                  for e in entries},
        summary=summary(parts, entries),
        partitions=[dict(account_id=p.instances[p.ids[0]]["account_id"], region=p.instances[p.ids[0]]["region"],
                         instance_count=len(p.ids), errors=dict(p.errors)) for p in parts],
        tag_errors=tag_errors,
    )


def first_error(entry):
    """The error of the step the instance failed at (the last step with one), or None."""
    errors = [step.get("error") for step in (entry.get("steps") or {}).values() if step.get("error")]
    return errors[-1] if errors else None


def summary(parts, entries):
    """{steps: {step: {passed, failed}}, final_status: {status: count}, total}: what the role prints per wave."""
    steps = {}
    for name in STEPS:
        results = [r for p in parts for r in p.results[name]]
        ran = [i for p in parts for i in p.ids if name in p.times[i]]
        if not ran:
            continue
        if name == "gate":
            good = len(results)
        else:
            good = len(passed(results, STEP_OK[name]))
        steps[name] = {"passed": good, "failed": len(ran) - good}
    statuses = {}
    for entry in entries:
        status = entry.get("final_status") or "planned"
        statuses[status] = statuses.get(status, 0) + 1
    return {"total": len(entries), "steps": steps, "final_status": statuses}


def no_success_message(result, check_mode, shown=5):
    """One line summing up why no instance of the wave succeeded, or None when one did (or there were none).

    Success is a patched instance, or in check mode one whose patch would run. e.g. "no instance of the wave succeeded:
    2 failed/no_verified_backup (i-1, i-2), 1 rolled_back/health_check_failed (i-3); first error: ..."
    """
    entries = result["results"]
    if not entries or result.get("mode") == "recover":  # a recovery succeeds or fails per instance, never as a wave
        return None
    if check_mode:
        if any((e.get("patch") or {}).get("outcome") == "would_run" or (e.get("rollback") or {}).get("status") == "would_restore"
               for e in entries):
            return None
    elif any(e.get("final_status") == ("rolled_back" if result.get("mode") == "restore" else "patched") for e in entries):
        return None
    groups = {}
    for entry in entries:
        key = f"{entry.get('final_status') or 'not_patched'}/{entry.get('reason') or 'none'}"
        groups.setdefault(key, []).append(entry["instance_id"])
    parts = []
    for key, ids in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        more = f", +{len(ids) - shown} more" if len(ids) > shown else ""
        parts.append(f"{len(ids)} {key} ({', '.join(ids[:shown])}{more})")
    first = next((step["error"] for e in entries for step in (e.get("steps") or {}).values() if step.get("error")), None)
    return "no instance of the wave succeeded: " + ", ".join(parts) + (f"; first error: {first}" if first else "")
