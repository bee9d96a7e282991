"""`meterline --stack NAME` finds tables and the vault key from a deployed stack's outputs."""

from __future__ import annotations

import json

from meterline.cli import target
from meterline.store.schema import ALL_TABLES


def test_settings_come_from_the_stack_outputs(settings, moto, monkeypatch):
    # The output names are the CDK stack's own (tests/infra checks the template emits them).
    from infra_cdk.constants import OUT_KMS_KEY_ARN, table_output_key

    outputs = {table_output_key(spec.logical_name): {"Value": f"Meterline-{spec.logical_name}-ABC123"}
               for spec in ALL_TABLES}
    outputs[OUT_KMS_KEY_ARN] = {"Value": "arn:aws:kms:us-east-1:123456789012:key/1234"}
    template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs}
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)  # boto3 sends every client to the embedded AWS
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    boto3.client("cloudformation").create_stack(StackName="MeterlineTest", TemplateBody=json.dumps(template))
    resolved, context = target.resolve("MeterlineTest")
    assert context == {"stack": "MeterlineTest"}  # names the target in errors; no default workspace
    for spec in ALL_TABLES:
        assert resolved.table(spec) == f"Meterline-{spec.logical_name}-ABC123"
    assert resolved.kms_key_id.endswith("key/1234") and resolved.aws_endpoint is None
