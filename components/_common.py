"""Small helpers shared by the components (no resources are created here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi

#: Tag every taggable child carries; the policy pack reads it to tell prod from dev.
ENVIRONMENT_TAG = "prodstack:environment"


def child_opts(parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
    """Options for a child resource: always parented to its component."""
    return pulumi.ResourceOptions(parent=parent, **kwargs)


def merge_tags(base: Mapping[str, str], role: str) -> dict[str, str]:
    """The component's tags plus a ``prodstack:role`` tag naming the child's role."""
    return {**base, "prodstack:role": role}


def assume_role_policy(service: str) -> str:
    """IAM trust policy letting one AWS service principal assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


# CloudWatch Logs accepts only these retention values (days).
# Source: botocore logs/2014-03-28 PutRetentionPolicyRequest.retentionInDays doc;
# TF internal/service/logs/validate.go validRetentionInDays.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
    2192, 2557, 2922, 3288, 3653,
)
