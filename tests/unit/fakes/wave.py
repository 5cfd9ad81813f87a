"""ssm_patch_wave's options with their defaults, and a step clock: shared by the wave engine's tests (fake steps) and
its capacity tests (the real capacity code on the in-memory ELBv2 / Auto Scaling fakes)."""

import threading
from datetime import datetime, timedelta, timezone

from ansible_collections.cms.patching.tests.unit.fakes.ssm import iid  # noqa: F401  pylint: disable=unused-import

SNAPSHOT = "0f5cbd50-1c6e-4c4a-9b48-2b6c1f1a3c11"


def wave_params(instances, **kw):
    """The module's options with their defaults, as AnsibleAWSModule hands them over."""
    base = dict(instances=instances, region="us-east-1", role_arn=None, role_session_name="cms-patching", external_id=None,
                require_backup=True, max_backup_age_hours=24.0, rollback=True, rollback_timeout=1800, command_timeout=600,
                status_tags=True, partition_concurrency=8, fail_on_no_success=True, run_id="run-wave", snapshot_id=SNAPSHOT,
                operation="Install", reboot_option="RebootIfNeeded", document="AWS-RunPatchBaseline",
                pre_install_hook_doc_name=None, post_install_hook_doc_name=None, on_exit_hook_doc_name=None,
                install_override_list=None, baseline_override=None, execution_timeout=7200, agent_online_timeout=900,
                agent_check_interval=60.0, max_concurrency="100%", max_errors="100%", delivery_timeout=600,
                output_s3_bucket_name=None, output_s3_key_prefix=None, cloudwatch_output=None, poll_interval=10.0)
    base.update(kw)
    return base


class Clock:
    """A thread-safe fake UTC clock: each reading is one second after the last."""

    def __init__(self):
        self.t = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.t += timedelta(seconds=1)
            return self.t
