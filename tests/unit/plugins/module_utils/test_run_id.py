"""One run-id rule: every checker of the collection accepts and refuses the same ids (issue: one run-id rule)."""

import pytest

from ansible_collections.cms.patching.plugins.filter.run_id import run_id as run_id_filter, run_id_error
from ansible_collections.cms.patching.plugins.module_utils import locks, report, run_id
from ansible_collections.cms.patching.plugins.module_utils.backup import naming as backup_naming
from ansible_collections.cms.patching.plugins.module_utils.ssm import options as ssm_options
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig

GOOD = ["r1", "awx-100", "20240501T120000Z-a1b2c3", "job_42.retry", "A" * 64]
BAD = ["", "-lead", ".lead", "has space", "a/b", "../etc", "x" * 65, "2024-05-01T12:00:00Z", "semi;colon", "e@mail"]


def accepted_by_every_checker(value):
    """What each consumer says: the lock, the backup naming, the SSM options, the report and the settings play."""
    verdicts = []
    for check in (lambda: locks.validate_lock_params({"instance_ids": ["i-0123456789abcdef0"], "run_id": value}),
                  lambda: backup_naming.validate_run_id(value), lambda: ssm_options.resolve_run_id(value)):
        try:
            check()
            verdicts.append(True)
        except PatchingError:
            verdicts.append(False)
    try:
        report.run_directory("/tmp", value)
        verdicts.append(True)
    except ValueError:
        verdicts.append(False)
    verdicts.append(run_id_error(value) == "")
    return verdicts


@pytest.mark.parametrize("value", GOOD)
def test_every_checker_accepts_a_good_run_id(value):
    assert accepted_by_every_checker(value) == [True] * 5


@pytest.mark.parametrize("value", BAD)
def test_every_checker_refuses_a_bad_run_id_with_the_same_line(value):
    assert accepted_by_every_checker(value) == [False] * 5
    with pytest.raises(PatchingError) as caught:
        ssm_options.resolve_run_id(value)
    assert str(caught.value) == run_id.error(value)
    assert run_id_error(value) == run_id.error(value, "cms_patching_run_id")
    assert "\n" not in str(caught.value)


def test_generated_ids_are_valid_distinct_and_used_by_the_play():
    made = {run_id.generate() for _n in range(50)} | {run_id_filter("") for _m in range(50)} | {run_id_filter(None)}
    assert len(made) == 101
    assert all(run_id.is_valid(m) and len(m) == 23 for m in made)
    assert run_id_filter("given-1") == "given-1"


def test_the_longest_run_id_fits_every_name_it_goes_into():
    longest = "r" * run_id.MAX_LENGTH
    # SendCommand Comment: at most 100 characters, and the run id must survive whole.
    assert longest in RunConfig(longest).comment("precheck")
    name = backup_naming.DEFAULT_NAME.format(instance_id="i-0123456789abcdef0", timestamp="20240501T120000Z", run_id=longest)
    assert len(name) <= backup_naming.AMI_NAME_MAX
