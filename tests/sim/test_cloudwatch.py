"""CloudWatch alarms and the SSM stop parameter in the simulator, with plain boto3 (the operator's controls of issue 18)."""
from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from .conftest import http, wait_for


def _metric_alarm(cw, name: str) -> None:
    cw.put_metric_alarm(AlarmName=name, MetricName="5xx", Namespace="App", Statistic="Sum", Period=60, EvaluationPeriods=1,
                        Threshold=1, ComparisonOperator="GreaterThanThreshold")


@pytest.fixture(name="prefix")
def fixture_prefix():
    return f"t-{uuid.uuid4().hex[:8]}-"


def test_new_alarm_has_insufficient_data(sim, prefix):
    cw = sim.client("cloudwatch")
    _metric_alarm(cw, prefix + "a")
    alarm = cw.describe_alarms(AlarmNames=[prefix + "a"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"


def test_alarm_types_default_is_metric_only(sim, prefix):
    cw = sim.client("cloudwatch")
    _metric_alarm(cw, prefix + "m")
    cw.put_composite_alarm(AlarmName=prefix + "c", AlarmRule=f'ALARM("{prefix}m")')
    plain = cw.describe_alarms(AlarmNamePrefix=prefix)
    assert [a["AlarmName"] for a in plain["MetricAlarms"]] == [prefix + "m"]
    assert plain["CompositeAlarms"] == []
    both = cw.describe_alarms(AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    assert [a["AlarmName"] for a in both["CompositeAlarms"]] == [prefix + "c"]
    assert both["CompositeAlarms"][0]["AlarmRule"] == f'ALARM("{prefix}m")'
    only = cw.describe_alarms(AlarmNames=[prefix + "m", prefix + "c"], AlarmTypes=["CompositeAlarm"])
    assert (only["MetricAlarms"], [a["AlarmName"] for a in only["CompositeAlarms"]]) == ([], [prefix + "c"])


def test_alarm_names_limit_and_combination(sim, prefix):
    cw = sim.client("cloudwatch", retries=1)
    with pytest.raises(ClientError) as err:
        cw.describe_alarms(AlarmNames=[f"{prefix}{n}" for n in range(101)])
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert cw.describe_alarms(AlarmNames=[f"{prefix}{n}" for n in range(100)])["MetricAlarms"] == []
    with pytest.raises(ClientError) as err:
        cw.describe_alarms(AlarmNames=[prefix + "a"], AlarmNamePrefix=prefix)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"
    raw = sim.session.client("cloudwatch", region_name="us-east-1", endpoint_url=sim.url,
                             config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    for bad in (0, 101):  # botocore checks the minimum itself; the server must refuse both
        with pytest.raises(ClientError) as err:
            raw.describe_alarms(MaxRecords=bad)
        assert err.value.response["Error"]["Code"] == "ValidationError"


def test_pagination_and_state_filter(sim, prefix):
    cw = sim.client("cloudwatch")
    names = [f"{prefix}{n:02d}" for n in range(7)]
    for name in names:
        _metric_alarm(cw, name)
    cw.set_alarm_state(AlarmName=names[3], StateValue="ALARM", StateReason="test")
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"NextToken": token} if token else {}
        page = cw.describe_alarms(AlarmNamePrefix=prefix, MaxRecords=3, **kwargs)
        seen += [a["AlarmName"] for a in page["MetricAlarms"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert (seen, pages) == (names, 3)
    firing = cw.describe_alarms(AlarmNamePrefix=prefix, StateValue="ALARM")["MetricAlarms"]
    assert [a["AlarmName"] for a in firing] == [names[3]]
    with pytest.raises(ClientError) as err:
        sim.client("cloudwatch", retries=1).describe_alarms(NextToken="garbage")
    assert err.value.response["Error"]["Code"] == "InvalidNextToken"


def test_scheduled_alarm_state(sim, prefix):
    cw = sim.client("cloudwatch")
    _metric_alarm(cw, prefix + "a")
    cw.set_alarm_state(AlarmName=prefix + "a", StateValue="OK", StateReason="baseline")
    answer = http(f"{sim.url}/_sim/alarm", "POST", {"name": prefix + "a", "state": "ALARM", "after_s": 0.5})
    assert answer["ok"] and answer["state"] == "ALARM"
    assert cw.describe_alarms(AlarmNames=[prefix + "a"])["MetricAlarms"][0]["StateValue"] == "OK"
    fired = wait_for(lambda: cw.describe_alarms(AlarmNames=[prefix + "a"], StateValue="ALARM")["MetricAlarms"], timeout=10, interval=0.1)
    assert fired and fired[0]["StateReason"].startswith("simulator: scheduled")
    # StateUpdatedTimestamp is the scheduled time, not the time the change was noticed.
    assert abs(fired[0]["StateUpdatedTimestamp"].timestamp() - answer["at"]) < 1.0


def test_scheduled_alarm_is_per_region_and_validated(sim, prefix):
    cw_east, cw_west = sim.client("cloudwatch"), sim.client("cloudwatch", region="eu-west-1")
    _metric_alarm(cw_east, prefix + "a")
    _metric_alarm(cw_west, prefix + "a")
    http(f"{sim.url}/_sim/alarm", "POST", {"name": prefix + "a", "state": "ALARM", "after_s": 0, "region": "eu-west-1"})
    assert cw_west.describe_alarms(AlarmNames=[prefix + "a"])["MetricAlarms"][0]["StateValue"] == "ALARM"
    assert cw_east.describe_alarms(AlarmNames=[prefix + "a"])["MetricAlarms"][0]["StateValue"] == "INSUFFICIENT_DATA"
    for bad in ({"name": prefix + "missing", "state": "ALARM"}, {"name": prefix + "a", "state": "RED"},
                {"name": prefix + "a", "state": "ALARM", "after_s": -1}):
        with pytest.raises(Exception) as err:
            http(f"{sim.url}/_sim/alarm", "POST", bad)
        assert getattr(err.value, "code", None) == 400


def test_stop_parameter(sim):
    """SSM parameters as the API reference documents: ParameterNotFound for a missing one, ParameterAlreadyExists
    without Overwrite, a new Version with it."""
    ssm = sim.client("ssm", retries=1)
    name = f"/cms-patching-{uuid.uuid4().hex[:8]}/stop"
    with pytest.raises(ClientError) as err:
        ssm.get_parameter(Name=name)
    assert err.value.response["Error"]["Code"] == "ParameterNotFound"
    assert ssm.put_parameter(Name=name, Value="go", Type="String")["Version"] == 1
    with pytest.raises(ClientError) as err:
        ssm.put_parameter(Name=name, Value="stop", Type="String")
    assert err.value.response["Error"]["Code"] == "ParameterAlreadyExists"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "go"
    assert ssm.put_parameter(Name=name, Value="stop", Type="String", Overwrite=True)["Version"] == 2
    param = ssm.get_parameter(Name=name)["Parameter"]
    assert (param["Value"], param["Version"], param["Name"]) == ("stop", 2, name)
    assert [p["Name"] for p in ssm.get_parameters_by_path(Path=name.rsplit("/", 1)[0])["Parameters"]] == [name]


def test_calls_are_counted_under_the_iam_prefix(sim, prefix):
    """CloudWatch signs as "monitoring" (botocore speaks JSON 1.0 to it); stats and iam_policy checks use "cloudwatch:<Action>"."""
    cw = sim.client("cloudwatch")
    _metric_alarm(cw, prefix + "a")
    cw.describe_alarms(AlarmNames=[prefix + "a"])
    assert sim.stats()["calls"] == {"cloudwatch:PutMetricAlarm": 1, "cloudwatch:DescribeAlarms": 1}


def _error(call, **kwargs) -> tuple[str, int, str | None]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    meta = err.value.response["ResponseMetadata"]
    return err.value.response["Error"]["Code"], meta["HTTPStatusCode"], meta["HTTPHeaders"].get("x-amzn-query-error")


def test_errors_reach_boto3_with_cloudwatch_query_codes(sim, prefix):
    """botocore's cloudwatch model (2010-08-01): "protocols" smithy-rpc-v2-cbor, json, query and "awsQueryCompatible";
    botocore speaks JSON 1.0, and an awsQueryCompatible service sends its query error code in x-amzn-query-error, which
    botocore reports as the Code (the model's error shapes: ResourceNotFound 404, InvalidParameterValue 400, ...)."""
    cw = sim.client("cloudwatch", retries=1)
    _metric_alarm(cw, prefix + "a")
    assert _error(cw.set_alarm_state, AlarmName=prefix + "missing", StateValue="ALARM", StateReason="t") == (
        "ResourceNotFound", 404, "ResourceNotFound;Sender")
    assert _error(cw.list_metrics, NextToken="not-a-token") == ("InvalidParameterValue", 400, "InvalidParameterValue;Sender")
    assert _error(cw.describe_alarms, NextToken="garbage") == ("InvalidNextToken", 400, "InvalidNextToken;Sender")
    assert _error(cw.describe_alarms, AlarmNames=[prefix + "a"], AlarmNamePrefix=prefix) == (
        "InvalidParameterCombination", 400, "InvalidParameterCombination;Sender")
    assert _error(cw.set_alarm_state, AlarmName=prefix + "a", StateValue="RED", StateReason="t") == (
        "ValidationError", 400, "ValidationError;Sender")
    assert sim.stats()["calls"]["cloudwatch:SetAlarmState"] == 2  # client errors: not retried


def test_simulator_made_errors_use_the_query_codes_too(sim, prefix):
    """The simulator's own answers for CloudWatch (throttling, a refusal under iam_policy, an unknown key) in the same
    shape: Throttling (400, which botocore's standard retry mode retries), AccessDenied (403), InvalidClientTokenId."""
    cw = sim.client("cloudwatch", retries=2)
    _metric_alarm(cw, prefix + "a")
    sim.config(throttle_rate=1)
    assert _error(cw.describe_alarms, AlarmNames=[prefix + "a"]) == ("Throttling", 400, "Throttling;Sender")
    assert sim.stats()["calls"]["cloudwatch:DescribeAlarms"] > 1  # retried as throttling
    sim.config(throttle_rate=0, iam_policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cloudwatch:PutMetricAlarm"], "Resource": "*"}]})
    try:
        code, status, header = _error(cw.describe_alarms, AlarmNames=[prefix + "a"])
        assert (code, status, header) == ("AccessDenied", 403, "AccessDenied;Sender")
        with pytest.raises(ClientError) as err:
            cw.describe_alarms(AlarmNames=[prefix + "a"])
        assert "is not authorized to perform: cloudwatch:DescribeAlarms" in err.value.response["Error"]["Message"]
    finally:
        sim.config(iam_policy=None)
    stranger = boto3.session.Session(aws_access_key_id="AKIAINVALID" + uuid.uuid4().hex[:9].upper(), aws_secret_access_key="x")
    unknown = stranger.client("cloudwatch", region_name="us-east-1", endpoint_url=sim.url, config=Config(retries={"max_attempts": 0}))
    assert _error(unknown.describe_alarms) == ("InvalidClientTokenId", 403, "InvalidClientTokenId;Sender")
