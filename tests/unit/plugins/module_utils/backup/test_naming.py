"""Name/description templates and run ids: every rule is checked before any AWS call."""

from datetime import datetime, timezone

import pytest

from ansible_collections.cms.patching.plugins.module_utils.backup import naming as N
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError

NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)


def values(name_tag="web 01", run_id="run-1"):
    return N.placeholder_values("i-0123456789abcdef0", name_tag, run_id, NOW)


def test_default_templates_are_valid_and_render():
    N.validate_name_template(N.DEFAULT_NAME)
    N.validate_description_template(N.DEFAULT_DESCRIPTION)
    assert N.render_name(N.DEFAULT_NAME, values()) == "cms-patching-i-0123456789abcdef0-20240501T123045Z-run-1"
    assert N.render_description(N.DEFAULT_DESCRIPTION, values()) == "cms-patching pre-patch backup of i-0123456789abcdef0 (web 01), run run-1"


def test_every_placeholder_renders():
    template = "{name}|{instance_id}|{date}|{time}|{timestamp}|{run_id}".replace("|", "_")
    N.validate_name_template(template)
    assert N.render_name(template, values()) == "web 01_i-0123456789abcdef0_2024-05-01_123045_20240501T123045Z_run-1"


@pytest.mark.parametrize("template, expected", [
    ("backup-{instance_id}-{host}", "unknown placeholder {host}"),
    ("backup-{instance_id}-{}", "unknown placeholder {}"),
    ("backup-{instance_id}-{0}", "unknown placeholder {0}"),
    ("backup-{instance_id}-{name.upper}", "unknown placeholder {name.upper}"),
    ("backup-{instance_id}-{date!r}", "takes no conversion or format spec"),
    ("backup-{instance_id}-{date:>20}", "takes no conversion or format spec"),
    ("backup-{instance_id", "invalid template"),
    ("backup-{instance_id}}", "invalid template"),
    ("backup-{name}", "must contain {instance_id}"),
    ("backup:{instance_id}", "characters EC2 does not allow in AMI names: :"),
])
def test_bad_name_templates_give_one_line(template, expected):
    with pytest.raises(PatchingError) as err:
        N.validate_name_template(template)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_description_rejects_unknown_placeholder_but_allows_any_text():
    N.validate_description_template("Backup: {name} ({instance_id}) #1")
    with pytest.raises(PatchingError, match=r"description: unknown placeholder \{owner\}"):
        N.validate_description_template("by {owner}")


def test_name_tag_values_are_made_legal_and_missing_name_falls_back_to_id():
    assert N.render_name("{name}-{instance_id}", values(name_tag="db:primary*")) == "db-primary--i-0123456789abcdef0"
    assert N.render_name("{name}-x-{instance_id}", values(name_tag=None)) == "i-0123456789abcdef0-x-i-0123456789abcdef0"


def test_long_name_tag_is_cut_and_overlong_result_rejected():
    assert len(values(name_tag="n" * 300)["name"]) == N.NAME_TAG_MAX
    with pytest.raises(PatchingError, match="EC2 allows 3 to 128"):
        N.render_name("{instance_id}" + "x" * 120, values())


def test_description_is_cut_to_aws_limit():
    assert len(N.render_description("{name}" * 10, values(name_tag="d" * 64))) == 255


@pytest.mark.parametrize("run_id", ["20240501T120000Z-a1b2c3", "r1", "awx-100", "job_42.retry", "x" * 64])
def test_good_run_ids(run_id):
    N.validate_run_id(run_id)


@pytest.mark.parametrize("run_id", ["", "-leading", "has space", "x" * 65, "semi;colon", "2024-05-01T12:00:00Z", "a/b"])
def test_bad_run_ids(run_id):
    with pytest.raises(PatchingError, match="run_id"):
        N.validate_run_id(run_id)


def test_generated_run_id_is_valid_and_unique():
    first, second = N.generate_run_id(NOW), N.generate_run_id(NOW)
    assert first.startswith("20240501T123045Z-") and first != second
    N.validate_run_id(first)


@pytest.mark.parametrize("text", ["2024-05-01T12:30:45Z", "2024-05-01T12:30:45.000Z", "2024-05-01T12:30:45+00:00"])
def test_parse_time_reads_tag_and_creation_date_formats(text):
    assert N.parse_time(text) == datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)


def test_parse_time_of_garbage_is_none():
    assert N.parse_time("yesterday") is None and N.parse_time(None) is None
