"""ssm_patch_run's inputs and the patch states the fake SSM reports, shared by the patch-run and module-result tests."""

from ansible_collections.cms.patching.plugins.module_utils.patch_run import run_patch
from ansible_collections.cms.patching.tests.unit.fakes.ssm import iid

SNAP = "11111111-2222-3333-4444-555555555555"


def params(**kw):
    base = dict(instance_ids=[iid(1)], operation="Install", reboot_option="RebootIfNeeded", document="AWS-RunPatchBaseline",
                pre_install_hook_doc_name=None, post_install_hook_doc_name=None, on_exit_hook_doc_name=None, snapshot_id=None,
                install_override_list=None, baseline_override=None, execution_timeout=60, agent_online_timeout=10,
                agent_check_interval=60.0, run_id="run-1", max_concurrency="100%", max_errors="100%", delivery_timeout=600, output_s3_bucket_name=None,
                output_s3_key_prefix=None, cloudwatch_output=None, wait=True, poll_interval=1.0)
    base.update(kw)
    return base


def state(missing=0, failed=0, pending=0, end="2024-01-01T00:00:00+00:00", snapshot=SNAP, operation="Install"):
    return {"MissingCount": missing, "FailedCount": failed, "InstalledPendingRebootCount": pending, "InstalledCount": 10,
            "Operation": operation, "OperationEndTime": end, "SnapshotId": snapshot}


BEFORE = state(missing=3, end="2023-12-01T00:00:00+00:00", snapshot="", operation="Scan")


def run(ssm, clock, **kw):
    return run_patch(ssm, params(snapshot_id=SNAP, **kw), check_mode=kw.pop("check_mode", False), clock=clock, sleep=clock.sleep)
