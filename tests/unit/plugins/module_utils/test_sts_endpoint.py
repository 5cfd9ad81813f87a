"""The STS client the collection builds to assume a role calls the regional endpoint of the run's region.

boto3/botocore 1.40 made `sts_regional_endpoints = regional` the default (boto/boto3#4583); before, a client in
eu-west-1 called the global endpoint sts.amazonaws.com, which lives in us-east-1, so a us-east-1 STS outage stopped a
patch night in any region. requirements.txt sets that floor; this test catches an older botocore or a code path that
builds its STS client another way. No endpoint override and no shared config take part.
"""

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.cms.patching.plugins.module_utils.aws import assumed_role_session

ROLE = "arn:aws:iam::123456789012:role/cms-patching"


@pytest.fixture(name="clean_env")
def fixture_clean_env(monkeypatch, tmp_path):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def _source_recording_sts(created):
    """A source session whose STS clients are recorded and answer AssumeRole from a stub (no network)."""
    source = boto3.session.Session(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    real_client = source.client

    def client(service, **kwargs):
        made = real_client(service, **kwargs)
        if service == "sts":
            stub = Stubber(made)
            stub.add_response("assume_role", {"Credentials": {
                "AccessKeyId": "ASIAEXAMPLE0000001", "SecretAccessKey": "s", "SessionToken": "t",
                "Expiration": datetime.now(timezone.utc) + timedelta(hours=1)}})
            stub.activate()
            created.append(made)
        return made

    source.client = client
    return source


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-2"])
def test_assume_role_uses_the_regional_sts_endpoint(region):
    created = []
    session = assumed_role_session(_source_recording_sts(created), ROLE, "cms-patching", region=region)
    assert session.get_credentials().get_frozen_credentials().access_key == "ASIAEXAMPLE0000001"
    assert [c.meta.endpoint_url for c in created] == [f"https://sts.{region}.amazonaws.com"]
    assert created[0].meta.region_name == region
