"""cdk-nag (v3) wiring: the AwsSolutions pack as a CDK policy-validation plugin, and acknowledgments.

cdk-nag v3 runs as a CDK policy-validation plugin: violations fail `cdk synth`/`cdk deploy` and are
written to `policy-validation-report.json` in the cloud assembly. Every acknowledgment names one
rule (or one finding, `RuleId[FindingId]`) on one construct and carries the reason it is accepted.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_checks(scope: IConstruct) -> None:
    Validations.of(scope).add_plugins(AwsSolutionsChecks(scope, verbose=True))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Accept one cdk-nag rule/finding on `construct` (and its children), for `reason`."""
    if len(reason.strip()) < 20:
        raise ValueError(f"acknowledging {rule_id} needs a specific reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
