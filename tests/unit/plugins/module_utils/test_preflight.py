"""module_utils/preflight.py: the pure rules, the free-space command (the patching role's, word for word), quotas with fakes."""

from pathlib import Path

import jinja2
import pytest
import yaml
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.preflight import (
    agent_too_old, check_quotas, disk_commands, judge, report_entry, run_preflight, validate, version_tuple,
)

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_disk_commands_are_the_patching_roles_pre_check(platform):
    raw = yaml.safe_load((ROOT / "roles" / "patching" / "vars" / "main.yml").read_text())["__patching_defaults"]["precheck_commands"][platform]
    rendered = [jinja2.Template(c).render(patching_min_free_mb=2048) for c in raw]
    assert disk_commands(platform, 2048) == rendered


def test_versions_compare_as_numbers():
    assert version_tuple("2.0.834.0") == (2, 0, 834, 0) and version_tuple("v2") is None
    assert not agent_too_old("2.0.1000.0") and not agent_too_old("3.3.987.0") and not agent_too_old("2.0.834.0")
    assert agent_too_old("2.0.833.99") and agent_too_old("1.9.999.9") and agent_too_old(None) and agent_too_old("unknown")
    assert not agent_too_old("2.1", "2.0.834.0") and agent_too_old("2.0", "2.0.834.0")


def test_validate_refuses_bad_input_with_one_line():
    good = dict(instance_ids=["i-0123456789abcdef0"], checks=["disk"], min_agent_version="2.0.834.0", min_free_mb=1, command_timeout=1,
                poll_interval=1)
    assert validate(good) == ["i-0123456789abcdef0"]
    for change, text in ((dict(instance_ids=[]), "instance_ids is empty"), (dict(checks=["ram"]), "unknown check(s) 'ram'"),
                         (dict(min_agent_version="x"), "dotted version"), (dict(min_free_mb=0), "min_free_mb must be greater than 0"),
                         (dict(planned_images=-1), "planned_images must be 0 or more")):
        with pytest.raises(PatchingError, match=text.replace("(", r"\(").replace(")", r"\)")):
            validate(dict(good, **change))


AGENT = {"ping_status": "Online", "agent_version": "3.3.987.0"}


def test_judge_failures_warnings_and_the_report_entry():
    ok = judge("i-1", ["disk", "agent_version", "kms"], AGENT, "2.0.834.0", {"outcome": "success"}, [], {})
    assert ok["passed"] and ok["reason"] is None and ok["warnings"] == []
    assert report_entry(ok) == {"instance_id": "i-1", "preflight": {"passed": True, "failures": [], "error": None, "warnings": [],
                                                                    "agent_version": "3.3.987.0"}}
    both = judge("i-2", ["disk", "agent_version"], dict(AGENT, agent_version="2.0.600.0"), "2.0.834.0",
                 {"outcome": "failed", "output_excerpt": "only 12 MB free on /, need 1024"}, None, {})
    assert both["failures"] == ["preflight_agent_version", "preflight_disk"] and both["reason"] == "preflight_agent_version"
    assert "2.0.600.0 is older than 2.0.834.0" in both["error"] and "only 12 MB free" in both["error"]
    entry = report_entry(both)
    assert (entry["final_status"], entry["reason"]) == ("failed", "preflight_agent_version")
    # The version check off: an old agent passes.
    assert judge("i-3", ["disk"], dict(AGENT, agent_version="1.0"), "2.0.834.0", {"outcome": "success"}, None, {})["passed"]
    # Not reached: a warning, not a failure (the wave's own pre-check stops it).
    lost = judge("i-4", ["disk"], AGENT, "2.0.834.0", {"outcome": "undeliverable", "error": "Undeliverable"}, None, {})
    assert lost["passed"] and [w["code"] for w in lost["warnings"]] == ["preflight_not_checked"]
    assert judge("i-5", ["agent_version"], None, "2.0.834.0", None, None, {})["passed"]


def test_kms_keys_warn_and_never_fail():
    vols = [dict(volume_id="vol-1", encrypted=True, kms_key_id="arn:k1"), dict(volume_id="vol-2", encrypted=True, kms_key_id="arn:k2"),
            dict(volume_id="vol-3", encrypted=False, kms_key_id=None), dict(volume_id="vol-4", encrypted=True, kms_key_id="arn:k3")]
    keys = {"arn:k1": ("Disabled", None), "arn:k2": (None, "kms:DescribeKey failed for arn:k2: AccessDeniedException: no"),
            "arn:k3": ("Enabled", None)}
    res = judge("i-1", ["kms"], AGENT, "2.0.834.0", None, vols, keys)
    assert res["passed"] and [w["message"].split(":")[0] for w in res["warnings"]] == ["vol-1", "vol-2"]
    assert "is Disabled" in res["warnings"][0]["message"] and "AccessDeniedException" in res["warnings"][1]["message"]


class Quotas:
    def __init__(self, values, refuse=False):
        self.values, self.refuse = values, refuse

    def get_service_quota(self, ServiceCode, QuotaCode):  # noqa: N803 (boto3's names)
        if self.refuse:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetServiceQuota")
        return {"Quota": {"Value": self.values[(ServiceCode, QuotaCode)]}}


class Ec2:
    def __init__(self, images, snapshots):
        self.items = {"describe_images": [{}] * images, "describe_snapshots": [{}] * snapshots}

    def get_paginator(self, operation):
        items = self.items[operation]
        key = "Images" if operation == "describe_images" else "Snapshots"

        class Pages:
            def paginate(self, **_kw):
                return [{key: items}]
        return Pages()


def test_quotas_room_is_one_line_for_the_account():
    quotas = Quotas({("ec2", "L-B665C33B"): 10.0, ("ebs", "L-309BACF6"): 100.0})
    fits = check_quotas(Ec2(7, 50), quotas, 3, 6, "us-east-1")
    assert fits["error"] is None and fits["quotas"]["amis"] == dict(quota_code="L-B665C33B", service_code="ec2", value=10, used=7, room=3, planned=3)
    short = check_quotas(Ec2(8, 99), quotas, 3, 6, "us-east-1", "111111111111")
    assert short["error"] == ("preflight_quota: account 111111111111 us-east-1: AMIs quota (L-B665C33B) 10, 8 in use: room for 2, this run "
                              "makes 3; Snapshots per Region quota (L-309BACF6) 100, 99 in use: room for 1, this run makes 6")
    unread = check_quotas(Ec2(8, 99), Quotas({}, refuse=True), 3, 6, "us-east-1")
    assert unread["error"] is None and unread["quotas"] == {} and len(unread["notes"]) == 2


class Ec2WithVolumes(Ec2):
    def __init__(self, images, snapshots, volumes):
        super().__init__(images, snapshots)
        self.items["describe_volumes"] = volumes

    def get_paginator(self, operation):
        if operation != "describe_volumes":
            return super().get_paginator(operation)
        items = self.items[operation]

        class Pages:
            def paginate(self, **_kw):
                return [{"Volumes": items}]
        return Pages()


I1, I2, I3 = "i-00000001", "i-00000002", "i-00000003"


def test_a_quota_only_call_reads_no_agent_and_counts_the_planned_images():
    # Discovery's call before the plan tag: the instances' SSM records are not read (not its question), so an instance
    # SSM does not know is no warning; the images are the instances given, the snapshots their EBS volumes.
    vols = [{"VolumeId": f"vol-{n}", "Attachments": [{"InstanceId": iid}]} for n, iid in enumerate([I1, I1, I2])]
    quotas = Quotas({("ec2", "L-B665C33B"): 10.0, ("ebs", "L-309BACF6"): 100.0})

    def clients(service, max_attempts=None):
        if service == "ssm":
            return object()  # any call on it fails the test
        return {"ec2": Ec2WithVolumes(8, 10, vols), "service-quotas": quotas}[service]

    result = run_preflight(clients, dict(instance_ids=[I1, I2, I3], checks=["quota"], region="us-east-1"), False)
    assert [r["warnings"] for r in result["results"]] == [[], [], []] and result["failed_ids"] == []
    assert result["account"]["error"] == ("preflight_quota: us-east-1: AMIs quota (L-B665C33B) 10, 8 in use: room for 2, this run makes 3")
    assert result["account"]["quotas"]["snapshots"]["planned"] == 4  # i-1's two volumes, i-2's one, i-3 at least its root
