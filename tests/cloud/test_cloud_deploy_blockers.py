"""What a real `pulumi up` would refuse, although Pulumi's mocks accept it."""

from __future__ import annotations

import pytest

# The CloudWatch API refuses these beside `metric_queries` (pulumi_aws
# cloudwatch.MetricAlarm: "you may not specify a metric_name, namespace, period or
# statistic").
NOT_WITH_METRIC_QUERIES = ("period", "metricName", "namespace", "statistic",
                           "extendedStatistic", "dimensions")  # fmt: skip


def test_metric_math_alarms_set_nothing_the_api_refuses(both):
    checked = 0
    for manifest in both:
        for alarm in manifest.inputs("cloudwatch/metricAlarm:MetricAlarm"):
            if alarm.get("metricQueries"):
                checked += 1
                assert not set(NOT_WITH_METRIC_QUERIES) & set(alarm), alarm
            else:
                assert alarm["period"] % 60 == 0 or alarm["period"] in (10, 20, 30)
    assert checked, "no metric-math alarm to check"


@pytest.mark.parametrize("setup", [
    "aws:s3/bucketPolicy:BucketPolicy::prodstack-lb-logs-policy",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls::prodstack-lb-logs-ownership",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock::prodstack-lb-logs-public-access",
])
def test_alb_waits_for_its_log_bucket_to_accept_logs(manifests, setup):
    """AWS checks write access when access logging is switched on: without these first,
    the first `up` can fail with "Access Denied for bucket"."""
    options = manifests["prod"]["resource_options"]
    assert setup in options["aws:lb/loadBalancer:LoadBalancer::prodstack-lb-alb"]["dependencies"]
