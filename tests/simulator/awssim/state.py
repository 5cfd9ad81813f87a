"""Shared simulator state: run-time config, per-credential accounting and the request context.

Everything time-dependent in the simulator is derived lazily from timestamps captured here,
so no background threads are needed.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

DURATION_KEYS = ("image_pending_s", "command_s", "reboot_s", "replace_root_s")
# sts_session_s: cap, in wall-clock seconds, on every session AssumeRole issues (0 = no cap: DurationSeconds alone).
CONFIG_KEYS = DURATION_KEYS + ("throttle_rate", "sts_session_s")
DEFAULTS = {"image_pending_s": 0.2, "command_s": 0.2, "reboot_s": 0.2, "replace_root_s": 0.2, "throttle_rate": 0.0,
            "sts_session_s": 0.0}
# deregister_s: seconds after DeregisterImage during which DeleteSnapshot of its snapshots answers InvalidSnapshot.InUse.
DURATION_KEYS += ("deregister_s",)
CONFIG_KEYS += ("deregister_s",)
DEFAULTS["deregister_s"] = 0.2
# send_drop_rate: share (0..1) of SendCommands that are accepted and then answered by a dropped connection (ssm.py).
CONFIG_KEYS += ("send_drop_rate",)
DEFAULTS["send_drop_rate"] = 0.0
# ping_interval_s: seconds between an SSM agent's health pings, i.e. the steps of LastPingDateTime (ssm.py); 300 as on AWS.
DURATION_KEYS += ("ping_interval_s",)
CONFIG_KEYS += ("ping_interval_s",)
DEFAULTS["ping_interval_s"] = 300.0
# sts_role_max_session_s: MaxSessionDuration of roles the sim's IAM does not hold (IAM API reference, CreateRole:
# MaxSessionDuration 3600..43200, default 3600); AssumeRole refuses a longer DurationSeconds (middleware.py).
CONFIG_KEYS += ("sts_role_max_session_s",)
DEFAULTS["sts_role_max_session_s"] = 3600.0
# health_s: seconds a registered ELBv2 target (or one back from a reboot) needs to pass its health checks (elbv2.py).
# drain_s: seconds a deregistered target stays draining; -1 (default) = the target group's deregistration_delay attribute.
# asg_transition_s: seconds of an Auto Scaling standby transition (EnteringStandby, Pending) (autoscaling.py).
DURATION_KEYS += ("health_s", "drain_s", "asg_transition_s")
CONFIG_KEYS += ("health_s", "drain_s", "asg_transition_s")
DEFAULTS.update(health_s=0.2, drain_s=-1.0, asg_transition_s=0.2)
# stop_s: seconds an instance stays `stopping` after StopInstances before it is `stopped` (ec2.py; EC2 user guide,
# "Amazon EC2 instance state changes"); StartInstances is refused meanwhile (IncorrectInstanceState).
DURATION_KEYS += ("stop_s",)
CONFIG_KEYS += ("stop_s",)
DEFAULTS["stop_s"] = 0.2
# Keys whose value is a JSON document rather than a number. iam_policy: an identity-based policy enforced on every call
# of the key (iam.py); null clears it.
JSON_KEYS = ("iam_policy",)
# Service Quotas (quotas.py): the applied values GetServiceQuota answers for EC2 "AMIs" (L-B665C33B, 50,000 by
# default) and EBS "Snapshots per Region" (L-309BACF6, 100,000), so a test can give an account a small quota.
CONFIG_KEYS += ("quota_amis", "quota_snapshots")
DEFAULTS.update(quota_amis=50000.0, quota_snapshots=100000.0)

FAULTS = frozenset((
    "ssm-unmanaged", "ssm-offline", "ami-fail", "snapshot-error", "precheck-fail", "patch-fail", "patch-timeout",
    "undeliverable", "delivery-timeout", "reboot-hang", "restart-fail", "health-fail", "rollback-fail",
))
# ELBv2 (elbv2.py): lb-unhealthy = the target fails its health checks for good once a patch has started on the instance;
# drain-stuck = a deregistered target stays draining forever.
FAULTS |= {"lb-unhealthy", "drain-stuck"}

# Agent and disk faults (ssm.py, ec2.py). agent-stuck: after the reboot inside a patch command the agent stays away
# (ConnectionLost, the invocation InProgress) until an EC2 RebootInstances, or a stop and start; agent-dead: only a stop
# and start brings it back. Once back, the agent resumes the document and the command ends (SSM user guide, "Handling
# reboots when running commands": the agent runs the document again after the reboot). disk-full: 12 MB free, so a
# free-space check (df / Get-PSDrive) fails and AWS-RunPatchBaseline fails with exit 1 (no space for packages).
FAULTS |= {"agent-stuck", "agent-dead", "disk-full"}

_LOCK = threading.RLock()
_CTX = threading.local()


def now() -> float:
    return time.time()


def _env_config() -> dict:
    cfg = dict(DEFAULTS)
    for key in CONFIG_KEYS:
        raw = os.environ.get("SIM_" + key.upper())
        if raw not in (None, ""):
            cfg[key] = float(raw)
    return cfg


def validate_config(values: dict) -> dict:
    """Keep known keys only, as floats (JSON_KEYS: as validated documents; null: clear the key); reject nonsense early
    with a clear message."""
    out = {}
    for key, value in values.items():
        if key not in CONFIG_KEYS + JSON_KEYS:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(CONFIG_KEYS + JSON_KEYS)}")
        if value is None or key in JSON_KEYS:
            out[key] = _validate_json(key, value)
            continue
        value = float(value)
        if value < 0 or (key == "throttle_rate" and value > 1):
            raise ValueError(f"{key} out of range: {value}")
        out[key] = value
    return out


def _validate_json(key: str, value):
    if value is None:
        return None
    from .iam import validate_policy  # pylint: disable=import-outside-toplevel
    return validate_policy(value)


class Accounting:
    """Call counters, global and per root access key (assumed-role keys roll up to their parent)."""

    def __init__(self) -> None:
        self.config: dict = _env_config()
        self.key_config: dict[str, dict] = {}
        self.parents: dict[str, str] = {}
        self.expiry: dict[str, float] = {}  # temporary access key -> wall time its session ends
        self.calls: Counter = Counter()
        self.key_calls: dict[str, Counter] = {}
        self.throttled: Counter = Counter()  # per root key; None counts everything

    def root_key(self, akid: str | None) -> str | None:
        seen = 0
        while akid in self.parents and seen < 10:
            akid = self.parents[akid]
            seen += 1
        return akid

    def session_expired(self, akid: str | None) -> bool:
        """True once a temporary key's session has ended (keys the sim did not issue never expire)."""
        ends = self.expiry.get(akid) if akid else None
        return ends is not None and now() >= ends

    def record(self, akid: str | None, name: str) -> None:
        with _LOCK:
            self.calls[name] += 1
            root = self.root_key(akid)
            if root:
                self.key_calls.setdefault(root, Counter())[name] += 1

    def record_throttle(self, akid: str | None) -> None:
        with _LOCK:
            self.throttled[None] += 1
            root = self.root_key(akid)
            if root:
                self.throttled[root] += 1

    def stats(self, key: str | None = None) -> dict:
        with _LOCK:
            calls = dict(self.calls) if key is None else dict(self.key_calls.get(self.root_key(key), {}))
            throttled = self.throttled[None if key is None else self.root_key(key)]
        mutating = {k: v for k, v in calls.items() if is_mutating(k)}
        return {"calls": calls, "mutating": mutating, "throttled": throttled}

    def reset(self, key: str | None = None) -> None:
        with _LOCK:
            if key is None:
                self.calls.clear()
                self.key_calls.clear()
                self.throttled.clear()
            else:
                self.key_calls.pop(self.root_key(key), None)
                self.throttled.pop(self.root_key(key), None)

    def set_config(self, values: dict, key: str | None = None) -> None:
        values = validate_config(values)
        with _LOCK:
            target = self.key_config.setdefault(self.root_key(key), {}) if key else self.config
            for name, value in values.items():
                if value is not None:
                    target[name] = value
                elif key or name in JSON_KEYS:
                    target.pop(name, None)
                else:
                    target[name] = _env_config()[name]

    def setting(self, name: str, akid: str | None = None) -> float:
        """Effective value for the request being served (per-key override, else global)."""
        if akid is None:
            akid = current_key()
        root = self.root_key(akid)
        override = self.key_config.get(root, {}) if root else {}
        return float(override.get(name, self.config[name]))

    def json_setting(self, name: str, akid: str | None = None):
        """Effective JSON_KEYS value (per-key override, else global, else None)."""
        root = self.root_key(current_key() if akid is None else akid)
        override = self.key_config.get(root, {}) if root else {}
        return override[name] if name in override else self.config.get(name)


ACCOUNTING = Accounting()


def is_mutating(name: str) -> bool:
    service, _sep, action = name.partition(":")
    if service == "sts":
        return False
    return not action.startswith(("Describe", "List", "Get", "Head"))


def set_current_key(akid: str | None) -> None:
    _CTX.akid = akid


def current_key() -> str | None:
    return getattr(_CTX, "akid", None)


def setting(name: str) -> float:
    return ACCOUNTING.setting(name)


def parse_faults(value: str | None) -> set[str]:
    return {f.strip() for f in (value or "").split(",") if f.strip()}


# Per-instance timeline (patch runs, root-volume restores) that SSM reads lazily; keyed by instance id.
EVENTS: dict[str, list] = {}


def add_event(instance_id: str, kind: str, at: float, obj=None) -> None:
    with _LOCK:
        EVENTS.setdefault(instance_id, []).append((at, kind, obj))


def events(instance_id: str) -> list:
    with _LOCK:
        return list(EVENTS.get(instance_id, ()))
