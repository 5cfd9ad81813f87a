# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chunking and pagination: the only ways the collection talks to list-shaped AWS APIs."""

from __future__ import annotations

# SendCommand, DescribeInstanceInformation and DescribeInstancePatchStates take at most 50 ids.
SSM_BATCH = 50
# CreateTags and DescribeImages/DescribeSnapshots filters take long id lists; stay well under request limits.
EC2_ID_BATCH = 200


def chunked(items, size):
    """Yield successive lists of at most `size` items, preserving order."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def paginate(client, operation, result_key, **params):
    """All items of a paginated operation, through boto3's paginator (retried page by page by botocore)."""
    items = []
    for page in client.get_paginator(operation).paginate(**params):
        items.extend(page.get(result_key, []))
    return items
