# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How an SSM command invocation's Status/StatusDetails becomes one of the collection's outcomes.

AWS reports Status (Pending, InProgress, Delayed, Success, Cancelled, TimedOut, Failed, Cancelling) and the finer
StatusDetails (adds Delivery Timed Out, Execution Timed Out, Undeliverable, Terminated, Invalid Platform,
Access Denied). StatusDetails decides where it is known, because Status alone cannot tell a delivery timeout
(nothing ran: no rollback needed) from an execution timeout (something ran: roll back).
"""

from __future__ import annotations

OUTCOMES = ("success", "failed", "timed_out", "delivery_timed_out", "undeliverable", "cancelled", "terminated")

# Normalised StatusDetails (lower case, no blanks) of terminal invocations.
DETAIL_OUTCOMES = {
    "success": "success",
    "failed": "failed",
    "executiontimedout": "timed_out",
    "deliverytimedout": "delivery_timed_out",
    "undeliverable": "undeliverable",
    # The document never ran on the instance: like undeliverable, nothing was changed there.
    "invalidplatform": "undeliverable",
    "accessdenied": "undeliverable",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "terminated": "terminated",  # MaxErrors exceeded: SSM cancelled invocations that had not started
}
# Terminal Status values, used when StatusDetails is missing or unknown.
STATUS_OUTCOMES = {
    "success": "success",
    "failed": "failed",
    "timedout": "timed_out",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}
NON_TERMINAL = frozenset(("pending", "inprogress", "delayed", "cancelling", "canceling"))
# Before delivery: the agent has not received the command, so nothing has run yet.
NOT_DELIVERED = frozenset(("pending", "delayed", ""))

EXCERPT_CHARS = 500


def normalise(value):
    return "".join((value or "").split()).replace("_", "").replace("-", "").lower()


def classify(status, status_details):
    """The outcome of a terminal invocation, or None while it is still running (or unknown, which is never success)."""
    s, d = normalise(status), normalise(status_details)
    if not s or s in NON_TERMINAL:
        return None
    return DETAIL_OUTCOMES.get(d) or STATUS_OUTCOMES.get(s)


def is_pending_delivery(status):
    return normalise(status) in NOT_DELIVERED


def output_excerpt(invocation, limit=EXCERPT_CHARS):
    """The tail of the plugins' output (errors come last), at most `limit` characters."""
    parts = [(p.get("Output") or "").strip() for p in invocation.get("CommandPlugins") or []]
    text = "\n".join(p for p in parts if p)
    if len(text) > limit:
        text = "..." + text[-(limit - 3):]
    return text


def exit_code_failure(invocation):
    """The first non-zero plugin exit code of an invocation, or None (-1 means the plugin did not run)."""
    for plugin in invocation.get("CommandPlugins") or []:
        code = plugin.get("ResponseCode")
        if code not in (None, 0, -1):
            return code
    return None
