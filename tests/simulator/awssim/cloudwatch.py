"""CloudWatch alarms on moto: PutCompositeAlarm, a DescribeAlarms as strict as AWS, and alarm states scheduled at a
simulated time (POST /_sim/alarm), applied lazily when DescribeAlarms is served."""
from __future__ import annotations

import base64
import datetime

from moto.cloudwatch.exceptions import CloudWatchException, InvalidParameterCombination, ValidationError
from moto.cloudwatch.models import cloudwatch_backends
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult, EmptyResult

from . import state

STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")
# botocore cloudwatch model, DescribeAlarmsInput: AlarmNames at most 100 items, MaxRecords 1..100.
MAX_NAMES = 100
MAX_RECORDS = 100
DEFAULT_RECORDS = 50  # AWS documents no default page size; the sim pages at 50 so that callers must follow NextToken
# (account, region) -> [(at, alarm name, state, reason)], applied in time order when DescribeAlarms is served.
SCHEDULE: dict[tuple[str, str], list[tuple[float, str, str, str]]] = {}


class InvalidNextToken(CloudWatchException):
    code = "InvalidNextToken"


def _backend(account: str, region: str):
    return cloudwatch_backends[account][region]


def _validation(message: str) -> ValidationError:
    return ValidationError(f"1 validation error detected: {message}")


def schedule(payload: dict) -> dict:
    """POST /_sim/alarm {"name", "state", "after_s", "reason"?, "region"?, "account"?}: SetAlarmState at now + after_s.

    Like the simulator's durations, nothing runs in the background: the change is applied by the first DescribeAlarms
    served at or after that time, with StateUpdatedTimestamp = the scheduled time."""
    name = payload.get("name")
    new_state = payload.get("state")
    region = payload.get("region") or "us-east-1"
    account = payload.get("account") or DEFAULT_ACCOUNT_ID
    after_s = float(payload.get("after_s", 0))
    if not isinstance(name, str) or not name:
        raise ValueError("name: the alarm's name is required")
    if new_state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if after_s < 0:
        raise ValueError(f"after_s out of range: {after_s}")
    if name not in _backend(account, region).alarms:
        raise ValueError(f"no alarm {name!r} in account {account} region {region}")
    at = state.now() + after_s
    reason = str(payload.get("reason") or f"simulator: scheduled state {new_state}")
    with state._LOCK:  # pylint: disable=protected-access
        SCHEDULE.setdefault((account, region), []).append((at, name, new_state, reason))
    return {"ok": True, "name": name, "state": new_state, "at": at, "account": account, "region": region}


def _apply_due(account: str, region: str) -> None:
    now = state.now()
    backend = _backend(account, region)
    with state._LOCK:  # pylint: disable=protected-access
        queue = sorted(SCHEDULE.get((account, region), []))
        due = [s for s in queue if s[0] <= now]
        SCHEDULE[(account, region)] = [s for s in queue if s[0] > now]
    for at, name, new_state, reason in due:
        alarm = backend.alarms.get(name)
        if alarm is None:  # deleted since
            continue
        backend.set_alarm_state(name, reason, "{}", new_state)
        alarm.state_updated_timestamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).replace(tzinfo=None)


def _decode(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise InvalidNextToken("The service cannot complete the request: the NextToken is not valid.") from exc


def describe_alarms(self):
    """DescribeAlarms as the botocore cloudwatch model documents it: AlarmNames (max 100) or AlarmNamePrefix, not both;
    AlarmTypes, and "If you omit this parameter, only metric alarms are returned, even if composite alarms or log alarms
    exist in the account"; StateValue and ActionPrefix narrow the result; MaxRecords 1..100 with NextToken. moto
    ignored AlarmTypes (returned composite alarms unasked), the limits and pagination."""
    names = self._get_param("AlarmNames") or []
    prefix = self._get_param("AlarmNamePrefix")
    types = self._get_param("AlarmTypes") or ["MetricAlarm"]
    state_value = self._get_param("StateValue")
    action_prefix = self._get_param("ActionPrefix")
    max_records = self._get_param("MaxRecords")
    if len(names) > MAX_NAMES:
        raise _validation(f"Value '{names}' at 'alarmNames' failed to satisfy constraint: Member must have length less than or "
                          f"equal to {MAX_NAMES}")
    if names and prefix:
        raise InvalidParameterCombination("AlarmNamePrefix and AlarmNames cannot be specified together.")
    for alarm_type in types:
        if alarm_type not in ("MetricAlarm", "CompositeAlarm", "LogAlarm"):
            raise _validation(f"Value '{alarm_type}' at 'alarmTypes' failed to satisfy constraint: Member must satisfy enum value set: "
                              "[CompositeAlarm, MetricAlarm, LogAlarm]")
    if state_value is not None and state_value not in STATES:
        raise _validation(f"Value '{state_value}' at 'stateValue' failed to satisfy constraint: Member must satisfy enum value set: "
                          "[INSUFFICIENT_DATA, ALARM, OK]")
    if self._get_param("ChildrenOfAlarmName") or self._get_param("ParentsOfAlarmName"):
        raise InvalidParameterCombination("ChildrenOfAlarmName and ParentsOfAlarmName are not supported by the simulator.")
    max_records = DEFAULT_RECORDS if max_records is None else int(max_records)
    if not 1 <= max_records <= MAX_RECORDS:
        raise _validation(f"Value '{max_records}' at 'maxRecords' failed to satisfy constraint: Member must have value between 1 "
                          f"and {MAX_RECORDS}")
    _apply_due(self.current_account, self.region)
    alarms = sorted(self.cloudwatch_backend.alarms.values(), key=lambda a: a.name)
    if names:
        alarms = [a for a in alarms if a.name in names]
    if prefix:
        alarms = [a for a in alarms if a.name.startswith(prefix)]
    if state_value:
        alarms = [a for a in alarms if a.state_value == state_value]
    if action_prefix:
        alarms = [a for a in alarms if any(act.startswith(action_prefix) for act in a.alarm_actions)]
    alarms = [a for a in alarms if ("CompositeAlarm" if a.rule is not None else "MetricAlarm") in types]
    start = _decode(self._get_param("NextToken")) if self._get_param("NextToken") else 0
    page = alarms[start:start + max_records]
    result = {"MetricAlarms": [a for a in page if a.rule is None], "CompositeAlarms": [a for a in page if a.rule is not None]}
    if start + max_records < len(alarms):
        result["NextToken"] = base64.urlsafe_b64encode(f"sim:{start + max_records}".encode()).decode()
    return ActionResult(result)


def put_composite_alarm(self):
    """PutCompositeAlarm (moto 5.2 has the model but not the action): an alarm whose AlarmRule combines others."""
    name = self._get_param("AlarmName")
    rule = self._get_param("AlarmRule")
    if not name or not rule:
        raise _validation("AlarmName and AlarmRule are required")
    alarm = self.cloudwatch_backend.put_metric_alarm(
        name=name, namespace=None, metric_name=None, comparison_operator=None, evaluation_periods=None, period=None,
        threshold=None, statistic=None, description=self._get_param("AlarmDescription"), dimensions=[],
        alarm_actions=self._get_param("AlarmActions", []), ok_actions=self._get_param("OKActions", []),
        insufficient_data_actions=self._get_param("InsufficientDataActions", []),
        actions_enabled=self._get_bool_param("ActionsEnabled"), rule=rule, tags=self._get_param("Tags", []))
    alarm.alarm_rule = rule  # the CompositeAlarm shape's member name
    _initial_state(alarm)
    return EmptyResult()


_orig_put_metric_alarm = CloudWatchResponse.put_metric_alarm


def put_metric_alarm(self):
    existing = self.cloudwatch_backend.alarms.get(self._get_param("AlarmName"))
    result = _orig_put_metric_alarm(self)
    alarm = self.cloudwatch_backend.alarms.get(self._get_param("AlarmName"))
    if alarm is not None and existing is None:
        _initial_state(alarm)
    return result


def _initial_state(alarm) -> None:
    """CloudWatch user guide, "Alarm states": INSUFFICIENT_DATA "the alarm has just started, the metric is not available,
    or not enough data is available". moto started new alarms in OK, which a gate would read as healthy; the sim has no
    metric data to evaluate, so an alarm stays INSUFFICIENT_DATA until SetAlarmState (or POST /_sim/alarm) changes it."""
    alarm.state_value = "INSUFFICIENT_DATA"
    alarm.state_reason = "Unchecked: Initial alarm creation"


def set_alarm_state(self):
    """moto's SetAlarmState (ResourceNotFound for an unknown alarm, as the CloudWatch API reference lists), after the
    changes scheduled before it."""
    _apply_due(self.current_account, self.region)  # an explicit call wins over a change scheduled before it
    return _orig_set_alarm_state(self)


_orig_set_alarm_state = CloudWatchResponse.set_alarm_state


def apply() -> None:
    CloudWatchResponse.describe_alarms = describe_alarms
    CloudWatchResponse.put_composite_alarm = put_composite_alarm
    CloudWatchResponse.put_metric_alarm = put_metric_alarm
    CloudWatchResponse.set_alarm_state = set_alarm_state
