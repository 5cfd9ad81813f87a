"""Test-only: shrink botocore's credential refresh windows so that sessions of a few seconds can be refreshed in time.

botocore refreshes assume-role credentials 15 minutes (advisory) and 10 minutes (mandatory) before they expire, and its
assume-role fetcher treats a cached session with less than 15 minutes left as expired. Against the simulator's
sts_session_s of a few seconds those windows cover the whole session, so every request would assume the role again.
Put this directory on PYTHONPATH (tests/integration/test_sts_sessions.py does, for its own runs only) and every Python
started from there (ansible-playbook, the inventory plugin, each module) renews 5 s (at the latest 4 s) before expiry
instead: with the 8-s sessions of those tests, a session is used for about 3 s and then has 4 to 5 s left for its
renewal, which a loaded machine has time for.
Nothing in the collection reads these values; real runs keep botocore's defaults.
"""
try:
    from botocore.credentials import CachedCredentialFetcher, RefreshableCredentials
except ImportError:  # pragma: no cover - interpreters without botocore
    pass
else:
    RefreshableCredentials._advisory_refresh_timeout = 5.0  # pylint: disable=protected-access
    RefreshableCredentials._mandatory_refresh_timeout = 4.0  # pylint: disable=protected-access
    CachedCredentialFetcher.DEFAULT_EXPIRY_WINDOW_SECONDS = 5.0
