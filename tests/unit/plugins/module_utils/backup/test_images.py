"""find_verified_backups and the instance lookup, checked against botocore's real request/response shapes."""

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.cms.patching.plugins.module_utils.backup.images import find_verified_backups, require_instances
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError


def client():
    return boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def image(image_id, instance_id, hours_ago, run_id="run-1", verified=True, managed=True):
    created = (datetime.now(timezone.utc) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = {"cms-patching:source-instance": instance_id, "cms-patching:run-id": run_id, "cms-patching:created-at": created}
    if managed:
        tags["cms-patching:managed"] = "true"
    if verified:
        tags["cms-patching:verified"] = "true"
    return {"ImageId": image_id, "Name": f"n-{image_id}", "State": "available", "CreationDate": created,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-" + image_id[4:]}},
                                    {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}]}


def expected_filters(ids):
    return [{"Name": "tag:cms-patching:managed", "Values": ["true"]}, {"Name": "tag:cms-patching:verified", "Values": ["true"]},
            {"Name": "state", "Values": ["available"]}, {"Name": "tag:cms-patching:source-instance", "Values": ids}]


def test_newest_verified_per_instance_in_one_call():
    ec2 = client()
    ids = ["i-00000001", "i-00000002", "i-00000003"]
    with Stubber(ec2) as stub:
        stub.add_response("describe_images", {"Images": [
            image("ami-00000001", "i-00000001", 30), image("ami-00000002", "i-00000001", 2, run_id="run-2"),
            image("ami-00000003", "i-00000002", 5), image("ami-00000009", "i-00000003", 1, managed=False),
        ]}, {"Owners": ["self"], "Filters": expected_filters(ids)})
        found = find_verified_backups(ec2, ids)
        stub.assert_no_pending_responses()
    assert found["i-00000001"]["image_id"] == "ami-00000002" and found["i-00000001"]["run_id"] == "run-2"
    assert found["i-00000001"]["snapshot_ids"] == ["snap-00000002"] and found["i-00000001"]["verified"] is True
    assert 1.9 < found["i-00000001"]["age_hours"] < 2.1
    assert found["i-00000002"]["image_id"] == "ami-00000003"
    assert found["i-00000003"] is None  # a look-alike without the ownership tag never counts


def test_max_age_hides_stale_backups():
    ec2 = client()
    with Stubber(ec2) as stub:
        stub.add_response("describe_images", {"Images": [image("ami-00000001", "i-00000001", 30)]},
                          {"Owners": ["self"], "Filters": expected_filters(["i-00000001"])})
        assert find_verified_backups(ec2, ["i-00000001"], max_age_hours=24) == {"i-00000001": None}


def test_large_fleets_are_chunked_by_200():
    ec2 = client()
    ids = [f"i-{n:08x}" for n in range(450)]
    with Stubber(ec2) as stub:
        for chunk in (ids[:200], ids[200:400], ids[400:]):
            stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "Filters": expected_filters(chunk)})
        assert set(find_verified_backups(ec2, ids).values()) == {None}
        stub.assert_no_pending_responses()


def test_aws_error_is_one_line():
    ec2 = client()
    with Stubber(ec2) as stub:
        stub.add_client_error("describe_images", "UnauthorizedOperation", "You are not\nauthorized")
        with pytest.raises(PatchingError, match=r"^ec2:DescribeImages failed: UnauthorizedOperation: You are not authorized$"):
            find_verified_backups(ec2, ["i-00000001"])


def test_require_instances_names_missing_and_terminated_ones():
    ec2 = client()
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": [{"Instances": [
            {"InstanceId": "i-00000001", "State": {"Name": "running", "Code": 16}},
            {"InstanceId": "i-00000002", "State": {"Name": "terminated", "Code": 48}},
        ]}]}, {"Filters": [{"Name": "instance-id", "Values": ["i-00000001", "i-00000002", "i-00000003"]}]})
        with pytest.raises(PatchingError, match=r"^instance\(s\) not found \(or terminated\): i-00000002, i-00000003$"):
            require_instances(ec2, ["i-00000001", "i-00000002", "i-00000003"])


def test_two_backups_made_in_one_second_are_ordered_by_aws_creation_date():
    # The created-at tag has whole seconds; AWS's CreationDate has milliseconds and decides, not the image id.
    older, newer = image("ami-0000000b", "i-00000001", 1), image("ami-0000000a", "i-00000001", 1, run_id="run-2")
    second = older["CreationDate"][:19]
    older["CreationDate"], newer["CreationDate"] = second + ".100Z", second + ".900Z"
    ec2 = client()
    with Stubber(ec2) as stub:
        stub.add_response("describe_images", {"Images": [older, newer]}, {"Owners": ["self"], "Filters": expected_filters(["i-00000001"])})
        assert find_verified_backups(ec2, ["i-00000001"])["i-00000001"]["image_id"] == "ami-0000000a"
