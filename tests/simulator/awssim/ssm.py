"""SSM Run Command, managed-instance inventory and patch states, simulated lazily from timestamps."""
from __future__ import annotations

import base64
import datetime
import heapq
import math
import random
import re
import socket
import uuid

from moto.ssm.exceptions import SSMException
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from . import state
from .ec2 import tags_of

PATCH_DOCS = ("AWS-RunPatchBaseline", "AWS-RunPatchBaselineWithHooks")
SHELL_DOCS = ("AWS-RunShellScript", "AWS-RunPowerShellScript")
# AWS-RunPatchBaseline(WithHooks) parameter SnapshotId: allowedPattern of the document (GetDocument content).
SNAPSHOT_ID_RE = re.compile(r"(^$)|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
STEP_FAULTS = {"precheck": "precheck-fail", "restart": "restart-fail", "health": "health-fail"}
PLATFORMS = {
    "linux": ("Linux", "Amazon Linux", "2023"),
    "windows": ("Windows", "Microsoft Windows Server 2022 Datacenter", "10.0.20348"),
    "macos": ("MacOS", "macOS", "14.5"),
}
BASELINES = {"Linux": "pb-0c10e65780EXAMPLE", "Windows": "pb-0a97e8a1d4EXAMPLE", "MacOS": "pb-0e6ac4f11fEXAMPLE"}
INSTALLED = 100
# disk-full: the free space a check finds on / and /var (C: on Windows), below any sensible minimum.
DISK_FULL_FREE_MB = 12
FREE_SPACE_CHECK_RE = re.compile(r"\bdf\b|Get-PSDrive|Get-Volume|Win32_LogicalDisk", re.IGNORECASE)
THRESHOLD_RE = re.compile(r"-lt\s+(\d+)")
# The faults whose agent stays away after the reboot inside a command until EC2 brings it back (state.FAULTS).
AGENT_FAULTS = ("agent-stuck", "agent-dead")
COMMANDS: dict[tuple[str, str], dict[str, "Command"]] = {}


def _err(code: str, message: str) -> SSMException:
    return SSMException(code, message)


def _too_many(field: str, count: int) -> SSMException:
    return _err("ValidationException", f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                f"Member must have length less than or equal to 50 (got {count})")


def _dt(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _launch(instance) -> float:
    # moto stores naive UTC datetimes.
    launch = instance.launch_time
    return (launch if launch.tzinfo else launch.replace(tzinfo=datetime.timezone.utc)).timestamp()


def _iso(ts: float | None) -> str:
    return _dt(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else ""


def _page(items: list, max_results, token, low: int, high: int) -> tuple[list, str | None]:
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise _err("InvalidNextToken", "The specified token is not valid.") from exc
    if max_results is None:
        max_results = high
    max_results = int(max_results)
    if not low <= max_results <= high:
        raise _err("ValidationException", f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
                   f"constraint: Member must have value between {low} and {high}")
    end = start + max_results
    token = base64.urlsafe_b64encode(f"sim:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], token


def _limit(value, total: int, default: int) -> int:
    """MaxConcurrency/MaxErrors: a count or a percentage of the targets."""
    value = str(value if value not in (None, "") else default).strip()
    if value.endswith("%"):
        return max(int(total * float(value[:-1]) / 100), 0)
    return int(value)


# -- instances as SSM sees them -----------------------------------------------------------------------------------

def _instance_meta(instance) -> dict:
    tags = tags_of(instance)
    faults = state.parse_faults(tags.get("sim:fault"))
    try:
        missing = int(tags.get("sim:missing", 3))
    except ValueError:
        missing = 3
    return {"tags": tags, "faults": faults, "missing": missing, "platform": tags.get("sim:platform", "linux")}


def _moments(instance_id: str, now: float) -> list[tuple[float, str, object]]:
    """What happened to an instance up to `now`, in order: restores, reboots started inside commands, ended invocations.

    An invocation's own times decide (not the time it was filed under): a reboot inside a command starts before the
    invocation ends, and a hung one never ends.
    """
    out = []
    for at, kind, obj in state.events(instance_id):
        if kind in ("restore", "power"):
            if at <= now:
                out.append((at, kind, obj))
            continue
        if obj.reboot_started(now):
            out.append((obj.reboot[0], "reboot", obj))
        if obj.end <= now:
            out.append((obj.end, "invocation", obj))
    return sorted(out, key=lambda m: m[0])


def timeline(instance, now: float) -> dict:
    """Replay what happened to this instance up to `now`: patch counts, reboot windows, hung agent.

    `patch` is what SSM reports (DescribeInstancePatchStates); `disk` is what is installed, which a run with
    BaselineOverride changes without reporting it.
    """
    meta = _instance_meta(instance)
    launch = _launch(instance)
    st = {"installed": INSTALLED, "missing": meta["missing"], "failed": 0, "pending_reboot": 0, "operation": "Scan",
          "op_start": launch, "op_end": launch, "snapshot_id": "", "reboot_option": "RebootIfNeeded"}
    reported = dict(st)
    reboots: list[tuple[float, float]] = []
    hang = False
    hang_at = None  # start of the reboot the agent did not come back from: it has not pinged since
    for at, kind, obj in _moments(instance.id, now):
        if kind == "restore":
            st.update(installed=INSTALLED, missing=meta["missing"], failed=0, pending_reboot=0)
            reported = dict(st)
            hang, hang_at = False, None
            reboots.append((at, at + obj["reboot_s"]))
            continue
        if kind == "power":
            # EC2 RebootInstances, or StartInstances after a stop: the agent is away while the instance boots (ec2.py).
            if obj["action"] in ("reboot", "start"):
                reboots.append((at, at + obj["reboot_s"]))
            continue
        if kind == "reboot":
            # SSM user guide, "Handling reboots when running commands": exit 194 (3010 on Windows) makes the agent
            # reboot the node inside the command; with reboot-hang the agent never comes back, with agent-stuck or
            # agent-dead not until EC2 brings it back.
            reboots.append(obj.reboot)
            if obj.hung(now) and not hang:
                hang_at = obj.reboot[0]
            hang = hang or obj.hung(now)
            continue
        outcome = obj.final()
        cmd = obj.command
        if outcome is None or cmd.document not in PATCH_DOCS or not outcome["ran"]:
            continue
        operation = cmd.param("Operation", "Scan")
        st.update(operation=operation, op_start=obj.start, op_end=obj.end, snapshot_id=cmd.param("SnapshotId", ""))
        if operation == "Install" and outcome["status"] == "Success":
            todo = st["missing"]
            st["reboot_option"] = cmd.param("RebootOption", "RebootIfNeeded")
            if st["reboot_option"] == "NoReboot":
                st.update(pending_reboot=st["pending_reboot"] + todo, missing=0, failed=0)
            else:
                st.update(installed=st["installed"] + todo + st["pending_reboot"], missing=0, failed=0, pending_reboot=0)
        elif operation == "Install" and outcome["status"] == "Failed":
            st.update(failed=max(st["missing"], 1), missing=0)
        # Patch Manager guide, "Using the BaselineOverride parameter": outside patch policies a run with
        # BaselineOverride does not overwrite patch compliance; its results go to the command's stdout only.
        if not cmd.param("BaselineOverride"):
            reported = dict(st)
    in_reboot = next((w for w in reboots if w[0] <= now < w[1]), None)
    return {"patch": reported, "disk": st, "reboots": reboots, "hang": hang, "hang_at": hang_at, "in_reboot": in_reboot, "meta": meta}


def _last_ping(instance, reboots: list, until: float) -> float:
    """The agent's last health ping at or before `until` (botocore ssm model, LastPingDateTime: "when the agent last
    pinged the Systems Manager service"). The agent pings when it starts (launch, or the end of its last reboot) and
    then every ping_interval_s: amazon-ssm-agent's health check, Ssm.HealthFrequencyMinutes, 5 minutes by default. So
    LastPingDateTime moves in steps and a healthy agent may look up to one interval silent. 0: a ping on every read
    (not AWS; a test knob)."""
    interval = state.ACCOUNTING.setting("ping_interval_s")
    if interval <= 0:
        return until
    start = max((w[1] for w in reboots if w[1] <= until), default=_launch(instance))
    return start + math.floor(max(until - start, 0.0) / interval) * interval


def ping_status(instance, now: float, tl: dict | None = None) -> tuple[str, float]:
    tl = tl or timeline(instance, now)
    if instance.state in ("terminated", "shutting-down"):
        return "Inactive", _launch(instance)
    last_reboot = max((w[0] for w in tl["reboots"] if w[0] <= now), default=_launch(instance))
    if instance.state != "running" or "ssm-offline" in tl["meta"]["faults"]:
        return "ConnectionLost", last_reboot
    if tl["hang"] or tl["in_reboot"]:
        # The agent stops pinging when the reboot starts: its last ping is the last periodic one before that. A hung
        # agent pinged last before the reboot it never came back from, whatever EC2 reboots came after (a dead agent
        # sends nothing: botocore ssm model, LastPingDateTime).
        went = tl["in_reboot"][0] if tl["in_reboot"] else last_reboot
        if tl["hang"] and tl["hang_at"] is not None:
            went = tl["hang_at"]
        return "ConnectionLost", _last_ping(instance, tl["reboots"], went)
    return "Online", _last_ping(instance, tl["reboots"], now)


def _ec2(resp):
    return ec2_backends[resp.current_account][resp.region]


def _managed(instance) -> bool:
    return "ssm-unmanaged" not in _instance_meta(instance)["faults"]


def _resolve(resp, instance_ids: list[str]) -> list:
    """Instances of this account and region registered with SSM; anything else is InvalidInstanceId like AWS."""
    backend = _ec2(resp)
    found, bad = [], []
    for iid in instance_ids:
        inst = backend.get_instance_by_id(iid)
        if inst is None or not _managed(inst) or inst.state == "terminated":
            bad.append(iid)
        else:
            found.append(inst)
    if bad:
        raise _err("InvalidInstanceId", f"Instances [[{', '.join(bad)}]] not in a valid state for account {resp.current_account}")
    return found


# -- commands ------------------------------------------------------------------------------------------------------

class Invocation:
    def __init__(self, command: "Command", instance, outcome: dict, faults: set[str]) -> None:
        self.command = command
        self.instance_id = instance.id
        self.instance_name = instance.private_dns_name
        self.outcome = outcome
        self.faults = faults
        self.start = self._end = command.created
        self.stuck = next((f for f in AGENT_FAULTS if f in faults), "")
        self.terminated_at: float | None = None
        self.cancelled_at: float | None = None
        self.reboot: tuple[float, float] | None = None  # the reboot inside the command (RebootIfNeeded), if any
        self.hang = False  # reboot-hang: the agent never comes back from that reboot

    def place(self, start: float, duration: float, reboot_s: float) -> None:
        """Run from `start`. A needed reboot happens inside the command (SSM user guide, "Handling reboots when running
        commands": on exit 194/3010 the agent reboots the node and runs the document again), so the invocation stays
        InProgress through it and ends after the post-reboot run; a hung agent never ends it: on AWS such commands have
        been seen to stay InProgress until cancelled (amazon-ssm-agent issue 320)."""
        self.start, self.end = start, start + duration
        if self.outcome.get("reboot"):
            self.reboot = (self.end, self.end + reboot_s)
            self.hang = "reboot-hang" in self.faults or bool(self.stuck)
            self.end = math.inf if self.hang else self.reboot[1]

    @property
    def end(self) -> float:
        """When the invocation ends; an agent brought back by EC2 resumes the document and ends it once it is up."""
        if self._end == math.inf and self.stuck:
            back = self.recovery()
            if back is not None:
                return back[1]
        return self._end

    @end.setter
    def end(self, value: float) -> None:
        self._end = value

    def recovery(self) -> tuple[float, float] | None:
        """(EC2 call that brought the agent back, when it is up again) for agent-stuck / agent-dead, else None.

        agent-stuck: the first RebootInstances (or StartInstances after a stop) after the in-command reboot began;
        agent-dead: only a StartInstances, i.e. a stop and start. The agent then runs the document again (SSM user
        guide, "Handling reboots when running commands"), so the command can still end.
        """
        if not self.stuck or self.reboot is None:
            return None
        wanted = ("reboot", "start") if self.stuck == "agent-stuck" else ("start",)
        for at, kind, obj in state.events(self.instance_id):
            if kind == "power" and obj["action"] in wanted and at >= self.reboot[0]:
                return at, at + obj["reboot_s"]
        return None

    def hung(self, now: float) -> bool:
        """The agent is away for good at `now` (reboot-hang, or agent-stuck / agent-dead not yet brought back)."""
        if not self.hang:
            return False
        back = self.recovery()
        return back is None or now < back[0]

    def reboot_started(self, now: float) -> bool:
        """The reboot began by `now`; cancelling the command once it has begun does not stop it."""
        return (self.reboot is not None and self.reboot[0] <= now and self.terminated_at is None
                and (self.cancelled_at is None or self.cancelled_at >= self.reboot[0]))

    def final(self) -> dict | None:
        """Outcome if the invocation ran to its end (not cancelled or terminated by MaxErrors)."""
        if self.terminated_at is not None or (self.cancelled_at is not None and self.cancelled_at < self.end):
            return None
        return self.outcome

    def view(self, now: float) -> dict:
        pending = {"status": "Pending", "details": "Pending", "rc": -1, "stdout": "", "stderr": "", "began": None, "ended": None}
        if self.terminated_at is not None:
            if now < self.terminated_at:
                return pending
            return dict(pending, status="Cancelled", details="Terminated", ended=self.terminated_at)
        if self.cancelled_at is not None and self.cancelled_at < self.end and now >= self.cancelled_at:
            began = self.start if self.cancelled_at >= self.start else None
            return dict(pending, status="Cancelled", details="Cancelled", began=began, ended=self.cancelled_at)
        if now >= self.end:
            out = self.outcome
            return {"status": out["status"], "details": out["details"], "rc": out["rc"], "stdout": out["stdout"],
                    "stderr": out["stderr"], "began": self.start if out["ran"] else None, "ended": self.end}
        if now < self.start + 0.3 * self.command.duration or not self.outcome["ran"]:
            return pending
        return dict(pending, status="InProgress", details="InProgress", began=self.start)


class Command:
    def __init__(self, resp, document: str, comment: str, parameters: dict, instances: list, timeout_s: int,
                 max_concurrency: str, max_errors: str) -> None:
        self.id = str(uuid.uuid4())
        self.account = resp.current_account
        self.region = resp.region
        self.document = document
        self.comment = comment
        self.parameters = parameters
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_errors = max_errors
        self.created = state.now()
        self.duration = state.setting("command_s")
        self.reboot_s = state.setting("reboot_s")
        words = comment.split()
        self.step = words[2] if len(words) >= 3 and words[0] == "cms-patching" else ""
        self.invocations = [Invocation(self, inst, *self._decide(inst)) for inst in instances]
        self._schedule(len(instances))

    def param(self, name: str, default: str = "") -> str:
        values = self.parameters.get(name) or [default]
        return values[0]

    def _decide(self, instance) -> tuple[dict, set[str]]:
        meta = _instance_meta(instance)
        faults = meta["faults"]

        def outcome(status, details, rc, stdout="", stderr="", ran=True, error=False, reboot=False):
            return {"status": status, "details": details, "rc": rc, "stdout": stdout, "stderr": stderr, "ran": ran, "error": error,
                    "reboot": reboot}

        ping = ping_status(instance, self.created)[0]
        disk_full = self._disk_full(faults)
        if "undeliverable" in faults:
            return outcome("Failed", "Undeliverable", -1, ran=False), faults
        if "delivery-timeout" in faults or (ping == "ConnectionLost" and not timeline(instance, self.created)["in_reboot"]):
            return outcome("TimedOut", "Delivery Timed Out", -1, ran=False), faults
        if disk_full:
            return outcome(*disk_full, error=True), faults
        if self.document in PATCH_DOCS:
            operation = self.param("Operation", "Scan")
            if operation == "Install" and "patch-fail" in faults:
                return outcome("Failed", "Failed", 1, "Installing patches...\n", "ERROR: simulated patch-fail: package install failed\n",
                               error=True), faults
            if operation == "Install" and "patch-timeout" in faults:
                return outcome("TimedOut", "Execution Timed Out", -1, "Installing patches...\n", "Execution timed out\n", error=True), faults
            return self._patch_success(instance, operation), faults
        fault = STEP_FAULTS.get(self.step)
        if fault and fault in faults:
            return outcome("Failed", "Failed", 1, "", f"simulated {fault}: step {self.step} failed\nfailed to run commands: exit status 1\n",
                           error=True), faults
        return outcome("Success", "Success", 0, "ok\n"), faults

    def _disk_full(self, faults: set[str]) -> tuple | None:
        """disk-full: what a full root volume does to this command (status, details, rc, stdout, stderr), or None.

        A free-space check (df, Get-PSDrive) sees DISK_FULL_FREE_MB and fails against any `-lt N` minimum above it (or
        when no minimum can be read); AWS-RunPatchBaseline cannot download or install packages and exits 1 (its
        failures are exit codes: Patch Manager guide, "SSM Command document for patching: AWS-RunPatchBaseline")."""
        if "disk-full" not in faults:
            return None
        if self.document in PATCH_DOCS:
            doing = "Installing patches" if self.param("Operation", "Scan") == "Install" else "Scanning for patches"
            return ("Failed", "Failed", 1, f"{doing}...\n",
                    "[Errno 28] No space left on device\nfailed to run commands: exit status 1\n")
        script = "\n".join(self.parameters.get("commands") or [])
        if not FREE_SPACE_CHECK_RE.search(script):
            return None
        minimums = [int(m) for m in THRESHOLD_RE.findall(script)]
        if minimums and max(minimums) <= DISK_FULL_FREE_MB:
            return None
        need = f", need {max(minimums)}" if minimums else ""
        where = "C:" if self.document == "AWS-RunPowerShellScript" else "/"
        return ("Failed", "Failed", 1, f"only {DISK_FULL_FREE_MB} MB free on {where}{need}\n",
                "failed to run commands: exit status 1\n")

    def _patch_success(self, instance, operation: str) -> dict:
        """A successful AWS-RunPatchBaseline run: whether it reboots inside the command, and what it prints."""
        disk = timeline(instance, self.created)["disk"]
        installed, after = 0, {"Missing": disk["missing"], "Failed": disk["failed"], "InstalledPendingReboot": disk["pending_reboot"]}
        reboot = False
        if operation == "Install":
            installed = disk["missing"]
            if self.param("RebootOption", "RebootIfNeeded") == "NoReboot":
                after = {"Missing": 0, "Failed": 0, "InstalledPendingReboot": disk["pending_reboot"] + installed}
            else:
                # RebootIfNeeded reboots when something was installed or already waits for a reboot (Patch Manager
                # guide, "SSM Command document for patching: AWS-RunPatchBaseline", parameter RebootOption).
                reboot = installed + disk["pending_reboot"] > 0
                after = {"Missing": 0, "Failed": 0, "InstalledPendingReboot": 0}
        stdout = f"{operation} finished: {installed} patches installed\n"
        if reboot:
            code = 3010 if _instance_meta(instance)["platform"] == "windows" else 194
            stdout += f"Reboot requested (exit {code}); the document ran again after the reboot\n"
        if self.param("BaselineOverride"):
            # Patch Manager guide, "Using the BaselineOverride parameter": the results are recorded in stdout, and only
            # packages marked NON_COMPLIANT (Missing, Failed, InstalledRejected, InstalledPendingReboot) are printed.
            stdout += "".join(f"sim-{name.lower()}-{n + 1} {name}\n" for name, count in after.items() for n in range(count))
        return {"status": "Success", "details": "Success", "rc": 0, "stdout": stdout, "stderr": "", "ran": True, "error": False,
                "reboot": reboot}

    def _schedule(self, total: int) -> None:
        """Start times honour MaxConcurrency; once errors exceed MaxErrors, unstarted invocations are Terminated."""
        slots = max(_limit(self.max_concurrency, total, 50), 1)
        allowed = _limit(self.max_errors, total, 0)
        running: list[float] = []
        error_ends: list[float] = []
        for inv in self.invocations:
            start = self.created if len(running) < slots else heapq.heappop(running)
            errors = sorted(t for t in error_ends if t <= start)
            if len(errors) > allowed:
                inv.terminated_at = errors[allowed]
                heapq.heappush(running, start)  # the slot stays free for the next one (also terminated)
                continue
            inv.place(start, self.duration, self.reboot_s)
            heapq.heappush(running, inv.end)
            if inv.outcome["error"]:
                error_ends.append(inv.end)

    def summary(self, now: float) -> dict:
        views = [inv.view(now) for inv in self.invocations]
        done = [v for v in views if v["status"] not in ("Pending", "InProgress")]
        errors = sum(1 for v in done if v["status"] == "Failed" and v["details"] == "Failed" or v["details"] == "Execution Timed Out")
        dto = sum(1 for v in done if v["details"] == "Delivery Timed Out")
        allowed = _limit(self.max_errors, len(views), 0)
        if len(done) < len(views):
            status = "InProgress" if any(v["status"] == "InProgress" or v["details"] != "Pending" for v in views) else "Pending"
            details = status
        elif any(v["details"] == "Cancelled" for v in views):
            status = details = "Cancelled"
        elif errors > allowed:
            status = details = "Failed"
        elif dto > allowed:
            status, details = "TimedOut", "Delivery Timed Out"
        elif all(v["status"] == "Success" for v in views):
            status = details = "Success"
        else:
            status, details = "Failed", "Incomplete"
        return {
            "CommandId": self.id, "DocumentName": self.document, "DocumentVersion": "$DEFAULT", "Comment": self.comment,
            "ExpiresAfter": _dt(self.created + self.timeout_s), "Parameters": self.parameters,
            "InstanceIds": [i.instance_id for i in self.invocations], "Targets": [], "RequestedDateTime": _dt(self.created),
            "Status": status, "StatusDetails": details, "MaxConcurrency": self.max_concurrency, "MaxErrors": self.max_errors,
            "TargetCount": len(views), "CompletedCount": len(done), "ErrorCount": errors, "DeliveryTimedOutCount": dto,
            "TimeoutSeconds": self.timeout_s, "ServiceRole": "", "NotificationConfig": {}, "OutputS3Region": self.region,
        }

    def plugin_name(self, instance_id: str) -> str:
        if self.document in PATCH_DOCS:
            return "PatchWindows" if self._platform(instance_id) == "windows" else "PatchLinux"
        return "aws:runPowerShellScript" if self.document == "AWS-RunPowerShellScript" else "aws:runShellScript"

    def _platform(self, instance_id: str) -> str:
        inst = ec2_backends[self.account][self.region].get_instance_by_id(instance_id)
        return _instance_meta(inst)["platform"] if inst else "linux"


def _commands(resp) -> dict[str, Command]:
    return COMMANDS.setdefault((resp.current_account, resp.region), {})


def _command(resp, command_id: str) -> Command:
    cmd = _commands(resp).get(command_id)
    if cmd is None:
        raise _err("InvalidCommandId", f"Command {command_id} does not exist")
    return cmd


def send_command(self):
    instance_ids = self._get_param("InstanceIds") or []
    targets = self._get_param("Targets") or []
    if len(instance_ids) > 50:
        raise _too_many("instanceIds", len(instance_ids))
    document = self._get_param("DocumentName")
    if document not in PATCH_DOCS + SHELL_DOCS:
        raise _err("InvalidDocument", f"Document with name {document} does not exist.")
    timeout = self._get_param("TimeoutSeconds")
    timeout = 3600 if timeout is None else int(timeout)
    if not 30 <= timeout <= 2592000:
        raise _err("ValidationException", f"1 validation error detected: Value '{timeout}' at 'timeoutSeconds' failed to satisfy "
                   "constraint: Member must have value between 30 and 2592000")
    parameters = self._get_param("Parameters") or {}
    if document in PATCH_DOCS:
        if self_param(parameters, "Operation", "Scan") not in ("Scan", "Install"):
            raise _err("InvalidParameters", "Parameter Operation must be Scan or Install.")
        if self_param(parameters, "RebootOption", "RebootIfNeeded") not in ("RebootIfNeeded", "NoReboot"):
            raise _err("InvalidParameters", "Parameter RebootOption must be RebootIfNeeded or NoReboot.")
        if not SNAPSHOT_ID_RE.fullmatch(self_param(parameters, "SnapshotId", "")):
            raise _err("InvalidParameters", f"Parameter SnapshotId {self_param(parameters, 'SnapshotId', '')!r} does not match the "
                       f"allowed pattern {SNAPSHOT_ID_RE.pattern}.")
    elif not parameters.get("commands"):
        raise _err("InvalidParameters", "Parameter commands is required.")
    if targets:
        instance_ids = list(instance_ids) + _targets(self, targets)
    if not instance_ids:
        raise _err("ValidationException", "InstanceIds or Targets must be specified.")
    instances = _resolve(self, list(dict.fromkeys(instance_ids)))
    cmd = Command(self, document, self._get_param("Comment") or "", parameters, instances, timeout,
                  str(self._get_param("MaxConcurrency") or "50"), str(self._get_param("MaxErrors") or "0"))
    with state._LOCK:  # pylint: disable=protected-access
        _commands(self)[cmd.id] = cmd
        for inv in cmd.invocations:
            state.EVENTS.setdefault(inv.instance_id, []).append((inv.end if inv.terminated_at is None else inv.terminated_at, "invocation", inv))
    for inv, inst in zip(cmd.invocations, instances):
        inv.output_chars = _output_chars(inst)
    if random.random() < state.setting("send_drop_rate"):
        # The command is accepted (it runs), but the caller never gets the answer. SendCommand has no idempotency token
        # (no ClientToken in the botocore ssm-2014-11-06 model), and botocore retries connection errors and read
        # timeouts inside the call (botocore "Retries" guide: legacy and standard modes), so a retry sends it twice.
        _drop_connection(self)
    return ActionResult({"Command": cmd.summary(cmd.created)})


def _drop_connection(resp) -> None:
    """Close the client's TCP connection now: the response written after this is lost, the client sees a reset/EOF."""
    sock = resp.normalized_request.environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("send_drop_rate needs the simulator's own HTTP server (no socket to drop)")
    sock.shutdown(socket.SHUT_RDWR)  # werkzeug's later write fails quietly (a dropped connection)


def self_param(parameters: dict, name: str, default: str) -> str:
    return (parameters.get(name) or [default])[0]


def _targets(resp, targets: list) -> list[str]:
    ids: list[str] = []
    backend = _ec2(resp)
    for target in targets:
        key, values = target.get("Key", ""), target.get("Values", [])
        if key == "InstanceIds":
            ids += values
        elif key.startswith("tag:"):
            ids += [i.id for i in backend.all_instances() if tags_of(i).get(key[4:]) in values and _managed(i)]
        else:
            raise _err("InvalidTarget", f"Target key {key} is not supported by the simulator.")
    return ids


# -- command output -------------------------------------------------------------------------------------------------
# ListCommandInvocations CommandPlugins[].Output holds at most 2,500 characters (SSM API reference, CommandPlugin:
# "Output ... Maximum length of 2500"). The agent fills it with the start of stdout and the start of stderr, cut to
# 2,400 with markers (amazon-ssm-agent, agent/contracts/plugin.go: MaximumPluginOutputSize, TruncateOutput).
PLUGIN_OUTPUT_MAX = 2500
AGENT_OUTPUT_MAX = 2400
ERROR_TITLE = "\n----------ERROR-------\n"
OUT_CUT, ERR_CUT = "\n---Output truncated---", "\n---Error truncated----"
# GetCommandInvocation: "The first 24,000 characters written by the plugin to stdout" and "The first 8,000 characters
# written by the plugin to stderr" (SSM API reference, GetCommandInvocation response elements).
STDOUT_CONTENT_MAX = 24000
STDERR_CONTENT_MAX = 8000


def _output_chars(instance) -> tuple[int, int]:
    """Tags `sim:output-chars` / `sim:error-chars`: make the instance's stdout / stderr that long (tests of long output)."""
    tags = tags_of(instance)
    sizes = []
    for name in ("sim:output-chars", "sim:error-chars"):
        try:
            sizes.append(max(int(tags.get(name, 0)), 0))
        except ValueError:
            sizes.append(0)
    return sizes[0], sizes[1]


def _padded(text: str, size: int, stream: str) -> str:
    """`text` grown to `size` characters by numbered log lines before it (what a command prints last stays last)."""
    need = size - len(text)
    if not text or need <= 0:
        return text
    lines = "".join(f"sim {stream} line {n:06d}\n" for n in range(need // 20 + 1))
    return lines[:need - 1] + "\n" + text if need > 1 else "\n" + text


def _streams(inv: Invocation, view: dict) -> tuple[str, str]:
    out_chars, err_chars = getattr(inv, "output_chars", (0, 0))
    return _padded(view["stdout"], out_chars, "stdout"), _padded(view["stderr"], err_chars, "stderr")


def plugin_output(stdout: str, stderr: str, capacity: int = AGENT_OUTPUT_MAX) -> str:
    """The agent's summary of one plugin's output: stdout, an error title, stderr; each cut from its end when too long."""
    title = ERROR_TITLE if stderr else ""
    room = capacity - len(title)
    if len(stdout) + len(stderr) < room:
        text = stdout + title + stderr
    elif len(stdout) > room / 2 and len(stderr) > room / 2:
        half = (room - len(ERR_CUT) - len(OUT_CUT)) // 2
        text = stdout[:half] + OUT_CUT + title + stderr[:half] + ERR_CUT
    elif len(stdout) < room / 2:
        text = stdout + title + stderr[:room - len(ERR_CUT) - len(stdout)] + ERR_CUT
    else:
        text = stdout[:room - len(OUT_CUT) - len(stderr)] + OUT_CUT + title + stderr
    return text[:PLUGIN_OUTPUT_MAX]


def _invocation_dict(cmd: Command, inv: Invocation, now: float, details: bool) -> dict:
    view = inv.view(now)
    out = {
        "CommandId": cmd.id, "InstanceId": inv.instance_id, "InstanceName": inv.instance_name, "Comment": cmd.comment,
        "DocumentName": cmd.document, "DocumentVersion": "$DEFAULT", "RequestedDateTime": _dt(cmd.created),
        "Status": view["status"], "StatusDetails": view["details"], "StandardOutputUrl": "", "StandardErrorUrl": "",
        "CommandPlugins": [], "ServiceRole": "", "NotificationConfig": {},
    }
    if details:
        plugin = {"Name": cmd.plugin_name(inv.instance_id), "Status": view["status"], "StatusDetails": view["details"],
                  "ResponseCode": view["rc"], "Output": plugin_output(*_streams(inv, view)), "StandardOutputUrl": "", "StandardErrorUrl": ""}
        if view["status"] == "Cancelled" and view["details"] == "Terminated":
            plugin["Status"] = "Cancelled"
        if view["began"]:
            plugin["ResponseStartDateTime"] = _dt(view["began"])
        if view["ended"] and view["began"]:
            plugin["ResponseFinishDateTime"] = _dt(view["ended"])
        out["CommandPlugins"] = [plugin]
    return out


def list_command_invocations(self):
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = bool(self._get_param("Details", False))
    now = state.now()
    cmds = [_command(self, command_id)] if command_id else sorted(_commands(self).values(), key=lambda c: -c.created)
    rows = [(c, i) for c in cmds for i in c.invocations if not instance_id or i.instance_id == instance_id]
    page, token = _page(rows, self._get_param("MaxResults"), self._get_param("NextToken"), 1, 50)
    result = {"CommandInvocations": [_invocation_dict(c, i, now, details) for c, i in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def get_command_invocation(self):
    cmd = _commands(self).get(self._get_param("CommandId"))
    instance_id = self._get_param("InstanceId")
    inv = next((i for i in cmd.invocations if i.instance_id == instance_id), None) if cmd else None
    if inv is None:
        raise _err("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation")
    view = inv.view(state.now())
    stdout, stderr = _streams(inv, view)
    elapsed = (view["ended"] - view["began"]) if view["ended"] and view["began"] else 0.0
    return ActionResult({
        "CommandId": cmd.id, "InstanceId": instance_id, "Comment": cmd.comment, "DocumentName": cmd.document,
        "DocumentVersion": "$DEFAULT", "PluginName": self._get_param("PluginName") or cmd.plugin_name(instance_id),
        "ResponseCode": view["rc"], "ExecutionStartDateTime": _iso(view["began"]), "ExecutionEndDateTime": _iso(view["ended"]),
        "ExecutionElapsedTime": f"PT{elapsed:.3f}S", "Status": view["status"], "StatusDetails": view["details"],
        "StandardOutputContent": stdout[:STDOUT_CONTENT_MAX], "StandardOutputUrl": "",
        "StandardErrorContent": stderr[:STDERR_CONTENT_MAX],
        "StandardErrorUrl": "", "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
    })


COMMAND_FILTERS = ("InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName")


def _filter_time(value: str) -> float:
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _err("InvalidFilterValue", f"invalid timestamp {value!r}") from None


def list_commands(self):
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    filters = {f["key"]: f["value"] for f in self._get_param("Filters") or []}
    for key in filters:
        if key not in COMMAND_FILTERS:
            raise _err("InvalidFilterKey", f"invalid filter key {key!r}")
    after = _filter_time(filters["InvokedAfter"]) if "InvokedAfter" in filters else None
    before = _filter_time(filters["InvokedBefore"]) if "InvokedBefore" in filters else None
    now = state.now()
    cmds = [_command(self, command_id)] if command_id else sorted(_commands(self).values(), key=lambda c: -c.created)
    rows = []
    for cmd in cmds:
        if instance_id and instance_id not in [i.instance_id for i in cmd.invocations]:
            continue
        if (after is not None and cmd.created < after) or (before is not None and cmd.created > before):
            continue
        summary = cmd.summary(now)
        if "DocumentName" in filters and summary["DocumentName"] != filters["DocumentName"]:
            continue
        if "Status" in filters and summary["Status"] != filters["Status"]:
            continue
        if "ExecutionStage" in filters and (filters["ExecutionStage"] == "Complete") != (summary["Status"] not in ("Pending", "InProgress", "Cancelling")):
            continue
        rows.append(summary)
    page, token = _page(rows, self._get_param("MaxResults"), self._get_param("NextToken"), 1, 50)
    result = {"Commands": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def cancel_command(self):
    cmd = _command(self, self._get_param("CommandId"))
    only = set(self._get_param("InstanceIds") or [])
    now = state.now()
    for inv in cmd.invocations:
        if (not only or inv.instance_id in only) and inv.cancelled_at is None and inv.view(now)["status"] in ("Pending", "InProgress"):
            inv.cancelled_at = now
    return ActionResult({})


# -- inventory and patch compliance --------------------------------------------------------------------------------

def _info_filters(resp) -> tuple[list | None, set | None, set | None]:
    ids, pings, platforms = None, None, None
    raw = [(f.get("Key", ""), f.get("Values", [])) for f in resp._get_param("Filters") or []]
    raw += [(f.get("key", ""), f.get("valueSet", [])) for f in resp._get_param("InstanceInformationFilterList") or []]
    for key, values in raw:
        lkey = key.lower()
        if lkey == "instanceids":
            if len(values) > 50:
                raise _too_many("instanceInformationFilterList.instanceIds", len(values))
            ids = list(values)
        elif lkey == "pingstatus":
            pings = set(values)
        elif lkey == "platformtypes":
            platforms = set(values)
        elif lkey not in ("resourcetype", "agentversion", "associationstatus"):
            raise _err("InvalidInstanceInformationFilterValue", f"The filter key {key} is not supported by the simulator.")
    return ids, pings, platforms


AGENT_VERSION = "3.3.987.0"  # the agent a seeded instance runs unless tagged sim:agent-version


def describe_instance_information(self):
    ids, pings, platforms = _info_filters(self)
    backend = _ec2(self)
    now = state.now()
    if ids is not None:
        candidates = [i for i in (backend.get_instance_by_id(x) for x in ids) if i is not None]
    else:
        candidates = [i for r in list(backend.reservations.values()) for i in list(r.instances)]
    rows = []
    for inst in candidates:
        if not _managed(inst):
            continue
        tl = timeline(inst, now)
        ping, last = ping_status(inst, now, tl)
        ptype, pname, pversion = PLATFORMS.get(tl["meta"]["platform"], PLATFORMS["linux"])
        if (pings and ping not in pings) or (platforms and ptype not in platforms):
            continue
        # The agent's version as DescribeInstanceInformation reports it (AgentVersion, IsLatestVersion): the tag
        # sim:agent-version stands for an instance whose agent was never updated (e.g. "2.0.672.0").
        agent_version = tl["meta"]["tags"].get("sim:agent-version") or AGENT_VERSION
        rows.append({
            "InstanceId": inst.id, "PingStatus": ping, "LastPingDateTime": _dt(last), "AgentVersion": agent_version,
            "IsLatestVersion": agent_version == AGENT_VERSION, "PlatformType": ptype, "PlatformName": pname, "PlatformVersion": pversion,
            "ResourceType": "EC2Instance", "IPAddress": inst.private_ip, "ComputerName": inst.private_dns_name,
            "AssociationStatus": "Success",
        })
    page, token = _page(rows, self._get_param("MaxResults"), self._get_param("NextToken"), 5, 50)
    result = {"InstanceInformationList": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _patch_state(inst, now: float) -> dict:
    tl = timeline(inst, now)
    st, meta = tl["patch"], tl["meta"]
    ptype = PLATFORMS.get(meta["platform"], PLATFORMS["linux"])[0]
    noncompliant = min(st["missing"] + st["failed"], 1)
    return {
        "InstanceId": inst.id, "PatchGroup": meta["tags"].get("Patch Group", ""), "BaselineId": BASELINES[ptype],
        "SnapshotId": st["snapshot_id"], "InstalledCount": st["installed"], "InstalledOtherCount": 0,
        "InstalledPendingRebootCount": st["pending_reboot"], "InstalledRejectedCount": 0, "MissingCount": st["missing"],
        "FailedCount": st["failed"], "UnreportedNotApplicableCount": 0, "NotApplicableCount": 25,
        "OperationStartTime": _dt(st["op_start"]), "OperationEndTime": _dt(st["op_end"]), "Operation": st["operation"],
        "RebootOption": st["reboot_option"], "CriticalNonCompliantCount": noncompliant, "SecurityNonCompliantCount": noncompliant,
        "OtherNonCompliantCount": 0,
    }


def describe_instance_patch_states(self):
    ids = self._get_param("InstanceIds") or []
    if len(ids) > 50:
        raise _too_many("instanceIds", len(ids))
    backend = _ec2(self)
    now = state.now()
    rows = [_patch_state(i, now) for i in (backend.get_instance_by_id(x) for x in ids) if i is not None and _managed(i)]
    page, token = _page(rows, self._get_param("MaxResults"), self._get_param("NextToken"), 10, 100)
    result = {"InstancePatchStates": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def describe_instance_patches(self):
    inst = _ec2(self).get_instance_by_id(self._get_param("InstanceId"))
    if inst is None or not _managed(inst):
        raise _err("InvalidInstanceId", f"Instance {self._get_param('InstanceId')} is not a managed node.")
    st = timeline(inst, state.now())["patch"]
    patches = []
    for state_name, count in (("Missing", st["missing"]), ("Failed", st["failed"]), ("InstalledPendingReboot", st["pending_reboot"])):
        for n in range(count):
            patches.append({"Title": f"sim-{state_name.lower()}-{n + 1}", "KBId": f"SIM-{state_name[:3].upper()}-{n + 1}",
                            "Classification": "Security", "Severity": "Critical", "State": state_name,
                            "InstalledTime": _dt(st["op_end"])})
    wanted = {f["Key"]: set(f["Values"]) for f in self._get_param("Filters") or []}
    if "State" in wanted:
        patches = [p for p in patches if p["State"] in wanted["State"]]
    page, token = _page(patches, self._get_param("MaxResults"), self._get_param("NextToken"), 10, 100)
    result = {"Patches": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def apply() -> None:
    for func in (send_command, list_command_invocations, get_command_invocation, list_commands, cancel_command,
                 describe_instance_information, describe_instance_patch_states, describe_instance_patches):
        setattr(SimpleSystemManagerResponse, func.__name__, func)
