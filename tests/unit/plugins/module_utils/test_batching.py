"""Batching and error helpers: the rules every module relies on."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, require_positive, validate_instance_ids


def test_chunked_respects_the_ssm_cap_and_keeps_order():
    ids = [f"i-{n:017x}" for n in range(120)]
    chunks = list(chunked(ids, 50))
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert [i for c in chunks for i in c] == ids


def test_chunked_rejects_zero_size():
    with pytest.raises(ValueError):
        list(chunked([1], 0))


@pytest.mark.parametrize("bad", ["i-123", "instance-1", "i-0123456789abcdefg", "I-01234567", 42])
def test_malformed_instance_ids_are_named_in_one_line(bad):
    with pytest.raises(PatchingError) as err:
        validate_instance_ids(["i-0123456789abcdef0", bad])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_duplicate_instance_ids_are_rejected():
    with pytest.raises(PatchingError, match="duplicate"):
        validate_instance_ids(["i-01234567", "i-01234567"])


@pytest.mark.parametrize("value", [0, -5])
def test_zero_and_negative_timeouts_are_rejected(value):
    with pytest.raises(PatchingError, match="wait_timeout must be greater than 0"):
        require_positive({"wait_timeout": value}, ["wait_timeout"])
