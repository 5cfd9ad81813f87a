"""Service Quotas for the quotas cms.patching's pre-flight reads: EC2 "AMIs" and EBS "Snapshots per Region".

moto 5.2 serves GetServiceQuota for VPC quotas only (NoSuchResourceException for every other service) and has no
GetAWSDefaultServiceQuota. Quota codes and defaults as the Service Quotas console and the EC2 / EBS user guides
("Amazon EC2 service quotas": AMIs L-B665C33B, 50,000 per Region, counting available, pending and disabled AMIs and
AMIs in the Recycle Bin; "Quotas for Amazon EBS": Snapshots per Region L-309BACF6, 100,000). The applied value is the
per-key config (quota_amis, quota_snapshots), so a test can give an account a small quota. The simulator reports the
quotas only: CreateImage and CreateSnapshot do not enforce them.
"""
from __future__ import annotations

import json

from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.responses import ServiceQuotasResponse

from . import state

# (service code, quota code) -> (service name, quota name, config key holding the applied value, default value)
QUOTAS = {
    ("ec2", "L-B665C33B"): ("Amazon Elastic Compute Cloud (Amazon EC2)", "AMIs", "quota_amis", 50000.0),
    ("ebs", "L-309BACF6"): ("Amazon Elastic Block Store (Amazon EBS)", "Snapshots per Region", "quota_snapshots", 100000.0),
}

_moto_get_service_quota = ServiceQuotasResponse.get_service_quota


def _quota(resp, service_code: str, quota_code: str, applied: bool) -> dict:
    """The Quota structure of the Service Quotas API reference (ServiceQuota)."""
    service_name, quota_name, key, default = QUOTAS[(service_code, quota_code)]
    return {
        "ServiceCode": service_code, "ServiceName": service_name, "QuotaCode": quota_code, "QuotaName": quota_name,
        "QuotaArn": f"arn:aws:servicequotas:{resp.region}:{resp.current_account if applied else ''}:{service_code}/{quota_code}",
        "Value": state.ACCOUNTING.setting(key) if applied else default, "Unit": "None", "Adjustable": True,
        "GlobalQuota": False,
    }


def get_service_quota(self):
    """GetServiceQuota: the applied value of the account's quota (Service Quotas API reference)."""
    params = json.loads(self.body or "{}")
    key = (str(params.get("ServiceCode")), str(params.get("QuotaCode")))
    if key not in QUOTAS:
        return _moto_get_service_quota(self)
    return json.dumps({"Quota": _quota(self, *key, applied=True)})


def get_aws_default_service_quota(self):
    """GetAWSDefaultServiceQuota: the default value, whatever was applied (Service Quotas API reference)."""
    params = json.loads(self.body or "{}")
    key = (str(params.get("ServiceCode")), str(params.get("QuotaCode")))
    if key not in QUOTAS:
        raise NoSuchResource()
    return json.dumps({"Quota": _quota(self, *key, applied=False)})


def apply() -> None:
    ServiceQuotasResponse.get_service_quota = get_service_quota
    ServiceQuotasResponse.get_aws_default_service_quota = get_aws_default_service_quota
