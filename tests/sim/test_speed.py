"""Seeding and describing a large fleet stays fast (stock moto is quadratic: ~12 s to seed 2,000, ~7 s to describe them).

Marked timing: `make pytest` runs these alone, before the parallel suite, so neighbours' work is not on the clock.
"""
from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.timing


def _seed_and_describe(sim, count: int) -> tuple[float, float]:
    start = time.time()
    seeded = sim.seed(count=count, tags={"cms-speed": uuid.uuid4().hex}, patch_group="web", environment="prod")
    seed_s = time.time() - start
    assert len(seeded) == count and sim.stats()["calls"]["ec2:RunInstances"] == -(-count // 500)
    ec2 = sim.client("ec2")
    best = None
    for _attempt in range(5):  # the best of five: a CI box's background work must not be on the clock
        start = time.time()
        found = 0
        for page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1000}):
            found += sum(len(r["Instances"]) for r in page["Reservations"])
        assert found >= count
        elapsed = (time.time() - start) * count / found
        best = elapsed if best is None else min(best, elapsed)
    return seed_s, best


def test_seed_and_describe_2000_instances(sim):
    seed_s, describe_s = _seed_and_describe(sim, 2000)
    # Contract: 5,000 in < 30 s and < 2 s. Scaled to 2,000: 12 s and 0.8 s; the describe bound is loose because most of
    # it is botocore parsing on a shared 2-core CI box (stock moto: ~12 s and ~7 s).
    assert seed_s < 10, seed_s
    assert describe_s < 3, describe_s


@pytest.mark.slow
def test_seed_and_describe_5000_instances(sim):
    seed_s, describe_s = _seed_and_describe(sim, 5000)
    assert seed_s < 30, seed_s
    assert describe_s < 2, describe_s
