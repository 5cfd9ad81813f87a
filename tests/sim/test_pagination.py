"""DescribeImages and DescribeReplaceRootVolumeTasks are paginated (botocore has a paginator for each): MaxResults
gives pages and a NextToken, as on AWS, so code that reads only the first page is caught."""
from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def _images(sim, count):
    sim.config(image_pending_s=0, replace_root_s=30)
    ec2 = sim.client("ec2")
    run = uuid.uuid4().hex
    ids = sim.ids(count=count)
    images = [ec2.create_image(InstanceId=i, Name=f"page-{run}-{n}", NoReboot=True,
                               TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "cms-page", "Value": run}]}])["ImageId"]
              for n, i in enumerate(ids)]
    return ec2, run, ids, images


def test_describe_images_honours_max_results(sim):
    ec2, run, _ids, images = _images(sim, 5)
    filters = [{"Name": "tag:cms-page", "Values": [run]}]
    first = ec2.describe_images(Owners=["self"], Filters=filters, MaxResults=2)
    assert len(first["Images"]) == 2 and first["NextToken"]
    pages = list(ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=filters, PaginationConfig={"PageSize": 2}))
    assert [len(p["Images"]) for p in pages] == [2, 2, 1]
    assert "NextToken" not in pages[-1]
    assert sorted(i["ImageId"] for p in pages for i in p["Images"]) == sorted(images)
    # Without MaxResults every match comes back at once.
    assert sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=filters)["Images"]) == sorted(images)


def test_describe_images_rejects_a_bad_token(sim):
    with pytest.raises(ClientError) as err:
        sim.client("ec2").describe_images(Owners=["self"], MaxResults=5, NextToken="not-a-token")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_describe_replace_root_volume_tasks_honours_max_results(sim):
    ec2, _run, ids, images = _images(sim, 3)
    tasks = [ec2.create_replace_root_volume_task(InstanceId=i, ImageId=a)["ReplaceRootVolumeTask"]["ReplaceRootVolumeTaskId"]
             for i, a in zip(ids, images)]
    first = ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=tasks, MaxResults=1)
    assert len(first["ReplaceRootVolumeTasks"]) == 1 and first["NextToken"]
    pages = list(ec2.get_paginator("describe_replace_root_volume_tasks").paginate(
        ReplaceRootVolumeTaskIds=tasks, PaginationConfig={"PageSize": 2}))
    assert [len(p["ReplaceRootVolumeTasks"]) for p in pages] == [2, 1]
    assert sorted(t["ReplaceRootVolumeTaskId"] for p in pages for t in p["ReplaceRootVolumeTasks"]) == sorted(tasks)
    with pytest.raises(ClientError) as err:  # the model caps a page at 50 (botocore checks only the minimum itself)
        ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=tasks, MaxResults=51)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
