"""The mapping table from every AWS invocation Status/StatusDetails to the collection's outcomes."""

import boto3
import pytest

from ansible_collections.cms.patching.plugins.module_utils.ssm.status import (
    NON_TERMINAL, OUTCOMES, STATUS_OUTCOMES, classify, exit_code_failure, is_pending_delivery, normalise, output_excerpt,
)

# (Status, StatusDetails, outcome) for every documented combination; None = still running.
TABLE = [
    ("Pending", "Pending", None),
    ("InProgress", "InProgress", None),
    ("InProgress", "In Progress", None),
    ("Delayed", "Delayed", None),
    ("Cancelling", "Cancelling", None),
    ("Success", "Success", "success"),
    ("Failed", "Failed", "failed"),
    ("TimedOut", "Execution Timed Out", "timed_out"),
    ("TimedOut", "ExecutionTimedOut", "timed_out"),
    ("TimedOut", "Delivery Timed Out", "delivery_timed_out"),
    ("TimedOut", "DeliveryTimedOut", "delivery_timed_out"),
    ("Failed", "Undeliverable", "undeliverable"),
    ("Failed", "Invalid Platform", "undeliverable"),
    ("Failed", "Access Denied", "undeliverable"),
    ("Cancelled", "Cancelled", "cancelled"),
    ("Cancelled", "Canceled", "cancelled"),
    ("Cancelled", "Terminated", "terminated"),
    ("Failed", "Terminated", "terminated"),
    # StatusDetails missing or new: the terminal Status decides
    ("Success", None, "success"),
    ("Failed", None, "failed"),
    ("Failed", "Something New", "failed"),
    ("TimedOut", None, "timed_out"),
    ("Cancelled", None, "cancelled"),
    # a Status that says "not done" wins over any details; unknown is never success
    ("InProgress", "Success", None),
    (None, None, None),
    ("", "Success", None),
    ("SomethingNew", "SomethingNew", None),
]


@pytest.mark.parametrize("status, details, outcome", TABLE)
def test_status_table(status, details, outcome):
    assert classify(status, details) == outcome


def test_every_aws_status_value_is_known():
    """Fails when botocore's model gains a Status the table does not handle."""
    enum = boto3.client("ssm", region_name="us-east-1").meta.service_model.shape_for("CommandInvocationStatus").enum
    assert {normalise(s) for s in enum} == {normalise(s) for s in STATUS_OUTCOMES if s != "canceled"} | {"pending", "inprogress", "delayed", "cancelling"}
    for status in enum:
        expected_open = normalise(status) in NON_TERMINAL
        assert (classify(status, None) is None) == expected_open, status


def test_outcomes_are_the_documented_seven():
    assert {row[2] for row in TABLE if row[2]} == set(OUTCOMES)


@pytest.mark.parametrize("status, pending", [("Pending", True), ("Delayed", True), (None, True), ("InProgress", False), ("Cancelling", False)])
def test_pending_delivery(status, pending):
    assert is_pending_delivery(status) is pending


def test_output_excerpt_keeps_the_tail_of_all_plugins():
    inv = {"CommandPlugins": [{"Output": "first\n"}, {"Output": None}, {"Output": "x" * 600 + "ERROR: last line\n"}]}
    text = output_excerpt(inv)
    assert len(text) == 500 and text.startswith("...") and text.endswith("ERROR: last line")
    assert output_excerpt({"CommandPlugins": [{"Output": " a "}, {"Output": "b"}]}) == "a\nb"
    assert output_excerpt({}) == ""


def test_exit_code_failure():
    assert exit_code_failure({"CommandPlugins": [{"ResponseCode": 0}, {"ResponseCode": -1}]}) is None
    assert exit_code_failure({"CommandPlugins": [{"ResponseCode": 0}, {"ResponseCode": 2}]}) == 2
    assert exit_code_failure({}) is None
