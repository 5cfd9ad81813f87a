# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-instance run locks held in AWS, so two runs never back up or patch the same instance together.

A lock is the SSM parameter /cms-patching/locks/<instance-id>, created with PutParameter Overwrite=false: SSM
refuses the second writer (ParameterAlreadyExists), which is the compare-and-set that tags lack. Its value is JSON
with the holder's run id, an expiry and a random token.

- Same run id: re-entrant (phases, resumed invocations and AWX slices of one run share the lock); the expiry is renewed.
- Expired lock of another run: taken over. Only one contender may win a given expired lock: the takeover is
  claimed first by creating /cms-patching/takeovers/<instance-id>/<token of the expired lock> with Overwrite=false.
- Release deletes the lock (and its takeover claim) only when this run holds it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids
from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    PatchingError, aws_error_message, error_code, is_aws_error, validate_instance_ids)

LOCK_PREFIX = "/cms-patching/locks/"
TAKEOVER_PREFIX = "/cms-patching/takeovers/"
# GetParameters and DeleteParameters take at most 10 names.
PARAM_BATCH = 10
MAX_TTL = 7 * 24 * 3600
TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"


def lock_name(instance_id):
    return LOCK_PREFIX + instance_id


def takeover_name(instance_id, token):
    return f"{TAKEOVER_PREFIX}{instance_id}/{token}"


def utcnow():
    return datetime.now(timezone.utc)


def validate_lock_params(params):
    """All input checks, before any AWS call."""
    ids = params.get("instance_ids") or []
    validate_instance_ids(ids)
    run_id = params.get("run_id")
    run_ids.validate(run_id)
    ttl = params.get("ttl")
    if ttl is not None and not 0 < ttl <= MAX_TTL:
        raise PatchingError(f"ttl must be between 1 and {MAX_TTL} seconds, got {ttl}")


def lock_value(run_id, ttl, now, taken_over=None):
    value = {"run_id": run_id, "token": uuid.uuid4().hex, "acquired_at": now.strftime(TIME_FMT),
             "expires_at": (now + timedelta(seconds=ttl)).strftime(TIME_FMT)}
    if taken_over:
        value["taken_over"] = taken_over
    return value


def parse_value(text):
    """A lock's JSON value; a value we cannot read is treated as held by an unknown run that never expires."""
    try:
        value = json.loads(text)
        datetime.strptime(value["expires_at"], TIME_FMT)
        return value if isinstance(value.get("run_id"), str) else {"run_id": "unknown", "expires_at": "9999-12-31T00:00:00Z"}
    except (ValueError, TypeError, KeyError):
        return {"run_id": "unknown", "expires_at": "9999-12-31T00:00:00Z"}


def is_expired(value, now):
    return datetime.strptime(value["expires_at"], TIME_FMT).replace(tzinfo=timezone.utc) <= now


def owner(value):
    return {"run_id": value.get("run_id"), "expires_at": value.get("expires_at")} if value else None


def read_locks(ssm, instance_ids):
    """{instance_id: parsed value} of the existing locks, GetParameters in batches of 10."""
    found = {}
    for chunk in chunked(instance_ids, PARAM_BATCH):
        resp = ssm.get_parameters(Names=[lock_name(i) for i in chunk])
        for param in resp.get("Parameters", []):
            found[param["Name"][len(LOCK_PREFIX):]] = parse_value(param["Value"])
    return found


def put_new(ssm, name, value):
    """True when this call created the parameter; False when it already existed (another writer won)."""
    try:
        ssm.put_parameter(Name=name, Value=json.dumps(value, sort_keys=True), Type="String", Overwrite=False,
                          Description="cms-patching run lock")
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e) and error_code(e) == "ParameterAlreadyExists":
            return False
        raise
    return True


def overwrite(ssm, name, value):
    ssm.put_parameter(Name=name, Value=json.dumps(value, sort_keys=True), Type="String", Overwrite=True)


def result(instance_id, status, how=None, holder=None):
    return {"instance_id": instance_id, "status": status, "how": how, "owner": owner(holder)}


def acquire_one(ssm, instance_id, run_id, ttl, current, now):
    """One instance whose lock exists (current): renew our own, take over an expired one, or report the holder."""
    mine = current.get("run_id") == run_id
    if not is_expired(current, now):
        if not mine:
            return result(instance_id, "locked_by_other_run", None, current)
        value = lock_value(run_id, ttl, now, current.get("taken_over"))
        overwrite(ssm, lock_name(instance_id), value)  # nobody may take over an unexpired lock: a plain renewal is safe
        return result(instance_id, "acquired", "reentrant", value)
    if not current.get("token"):
        return result(instance_id, "locked_by_other_run", None, current)  # unreadable value: never ours to take
    # Expired, even our own: claim it first so two contenders can never both win it.
    claim = {"run_id": run_id, "claimed_at": now.strftime(TIME_FMT)}
    if not put_new(ssm, takeover_name(instance_id, current["token"]), claim):
        return result(instance_id, "locked_by_other_run", None, read_locks(ssm, [instance_id]).get(instance_id, current))
    value = lock_value(run_id, ttl, now, current["token"])
    overwrite(ssm, lock_name(instance_id), value)
    if current.get("taken_over"):
        delete_quietly(ssm, takeover_name(instance_id, current["taken_over"]))  # the previous holder's claim is spent
    return result(instance_id, "acquired", "reentrant" if mine else "taken_over", value)


def delete_quietly(ssm, name):
    ssm.delete_parameters(Names=[name])  # unlike DeleteParameter, a name already gone is no error


def plan_one(instance_id, run_id, current, now):
    """Check mode: what acquiring would do, from a read only."""
    if current is None:
        return result(instance_id, "acquired", "new")
    if current.get("run_id") == run_id:
        return result(instance_id, "acquired", "reentrant", current)
    if is_expired(current, now) and current.get("token"):
        return result(instance_id, "acquired", "taken_over", current)
    return result(instance_id, "locked_by_other_run", None, current)


def acquire(ssm, instance_ids, run_id, ttl, check_mode=False, now=None):
    """Lock every instance for run_id; per instance acquired or locked_by_other_run (with the holder)."""
    now = now or utcnow()
    if check_mode:
        existing = read_locks(ssm, instance_ids)
        return [plan_one(i, run_id, existing.get(i), now) for i in instance_ids]
    results = {}
    contended = []
    for instance_id in instance_ids:  # no batch PutParameter exists; the common case is one call per free instance
        value = lock_value(run_id, ttl, now)
        if put_new(ssm, lock_name(instance_id), value):
            results[instance_id] = result(instance_id, "acquired", "new", value)
        else:
            contended.append(instance_id)
    existing = read_locks(ssm, contended) if contended else {}
    for instance_id in contended:
        current = existing.get(instance_id)
        if current is None:  # released between our write and our read: try once more
            value = lock_value(run_id, ttl, now)
            if put_new(ssm, lock_name(instance_id), value):
                results[instance_id] = result(instance_id, "acquired", "new", value)
                continue
            current = read_locks(ssm, [instance_id]).get(instance_id, {"run_id": "unknown", "expires_at": "9999-12-31T00:00:00Z"})
        results[instance_id] = acquire_one(ssm, instance_id, run_id, ttl, current, now)
    return [results[i] for i in instance_ids]


def release(ssm, instance_ids, run_id, check_mode=False):
    """Delete this run's locks (DeleteParameters in batches of 10); another run's lock is left alone."""
    existing = read_locks(ssm, instance_ids)
    mine = [i for i in instance_ids if (existing.get(i) or {}).get("run_id") == run_id]
    if not check_mode:
        names = [lock_name(i) for i in mine]
        names += [takeover_name(i, existing[i]["taken_over"]) for i in mine if existing[i].get("taken_over")]
        for chunk in chunked(names, PARAM_BATCH):
            ssm.delete_parameters(Names=chunk)
    out = []
    for instance_id in instance_ids:
        current = existing.get(instance_id)
        if instance_id in mine:
            out.append(result(instance_id, "released", None, current))
        else:
            out.append(result(instance_id, "locked_by_other_run" if current else "not_locked", None, current))
    return out


def run_locks(ssm, params, check_mode=False):
    """Module entry: validate, then acquire or release; returns the module result."""
    validate_lock_params(params)
    ids = params["instance_ids"]
    try:
        if params["state"] == "acquired":
            results = acquire(ssm, ids, params["run_id"], params["ttl"], check_mode)
        else:
            results = release(ssm, ids, params["run_id"], check_mode)
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            raise PatchingError(aws_error_message(e, "ssm_instance_lock")) from None
        raise
    return summarize(results, params["state"])


def summarize(results, state):
    def ids(status, how=None):
        return [r["instance_id"] for r in results if r["status"] == status and (how is None or r["how"] == how)]

    acquired = ids("acquired")
    changed = bool(ids("released")) if state == "released" else bool(acquired)
    return {"changed": changed, "results": results, "acquired": acquired, "released": ids("released"),
            "locked_by_other_run": ids("locked_by_other_run"), "taken_over": ids("acquired", "taken_over")}
