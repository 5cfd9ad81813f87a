"""The shared fakes answer like AWS where the code relies on it (filters, shapes)."""

from ansible_collections.cms.patching.tests.unit.fakes.ec2 import FakeEc2, instance


def test_fake_filters_like_aws():
    ec2 = FakeEc2({"i-00000001": instance("i-00000001")})
    ec2.create_image(InstanceId="i-00000001", Name="n", Description="d", NoReboot=True,
                     TagSpecifications=[{"ResourceType": r, "Tags": [{"Key": "k", "Value": "v"}]} for r in ("image", "snapshot")])
    assert len(ec2._describe_images(Filters=[{"Name": "tag:k", "Values": ["v"]}])["Images"]) == 1
    assert ec2._describe_images(Filters=[{"Name": "tag:k", "Values": ["other"]}])["Images"] == []
    assert ec2._describe_images(Filters=[{"Name": "image-id", "Values": ["ami-99999999"]}])["Images"] == []
