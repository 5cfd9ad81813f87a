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
# SSM's own limits on the output it returns (SSM API reference): ListCommandInvocations CommandPlugins[].Output holds
# at most 2,500 characters, cut by the agent with these markers (amazon-ssm-agent TruncateOutput);
# GetCommandInvocation returns the first 24,000 characters of stdout and the first 8,000 of stderr.
PLUGIN_OUTPUT_MAX = 2500
AGENT_CUT_MARKERS = ("---Output truncated---", "---Error truncated----")
STDOUT_CONTENT_MAX = 24000
STDERR_CONTENT_MAX = 8000
ERROR_TITLE = "----------ERROR-------"


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


def _tail(text, limit):
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def output_excerpt(invocation, limit=EXCERPT_CHARS):
    """The tail of the plugins' output (errors come last), at most `limit` characters."""
    return plugin_excerpt(invocation, limit)[0]


def plugin_excerpt(invocation, limit=EXCERPT_CHARS):
    """(excerpt, cut) from ListCommandInvocations' per-plugin Output; cut when SSM or `limit` left anything out."""
    outputs = [p.get("Output") or "" for p in invocation.get("CommandPlugins") or []]
    text = "\n".join(o.strip() for o in outputs if o.strip())
    cut = any(len(o) >= PLUGIN_OUTPUT_MAX or any(m in o for m in AGENT_CUT_MARKERS) for o in outputs)
    return _tail(text, limit), cut or len(text) > limit


def stream_excerpt(stdout, stderr, limit=EXCERPT_CHARS):
    """(excerpt, cut) from GetCommandInvocation's stdout/stderr: the end of stderr first, then the end of stdout.

    Errors are written last, so the tail is the telling part; when SSM returned only the first 8,000 (24,000)
    characters, the real end is not in reach and the excerpt is marked cut.
    """
    cut = len(stdout or "") >= STDOUT_CONTENT_MAX or len(stderr or "") >= STDERR_CONTENT_MAX
    stdout, stderr = (stdout or "").strip(), (stderr or "").strip()
    if not stderr:
        return _tail(stdout, limit), cut or len(stdout) > limit
    title = f"\n{ERROR_TITLE}\n"
    room = limit - len(stderr) - len(title)
    if not stdout or room < 40:  # no room left for a useful piece of stdout
        return _tail(stderr, limit), cut or len(stderr) > limit or bool(stdout)
    return _tail(stdout, room) + title + stderr, cut or len(stdout) > room


def exit_code_failure(invocation):
    """The first non-zero plugin exit code of an invocation, or None (-1 means the plugin did not run)."""
    for plugin in invocation.get("CommandPlugins") or []:
        code = plugin.get("ResponseCode")
        if code not in (None, 0, -1):
            return code
    return None
