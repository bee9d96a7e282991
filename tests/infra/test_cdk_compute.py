"""Compute modes: on-demand Lambda (default, scales to zero) and Lambda Managed Instances."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from tests.infra.test_cdk_lint import _nag_violations, lint_problems


def test_on_demand_is_the_default_and_has_no_vpc(synth):
    _, fn = synth.function("gateway")
    assert "CapacityProviderConfig" not in fn["Properties"]
    assert fn["Properties"]["Runtime"] == f"python{c.PYTHON_VERSION}"
    for cfn_type in ("AWS::Lambda::CapacityProvider", "AWS::EC2::VPC", "AWS::EC2::NatGateway"):
        assert not synth.of_type(cfn_type), cfn_type


def test_gateway_runs_on_the_capacity_provider(synth_managed):
    fn_id, fn = synth_managed.function("gateway")
    props = fn["Properties"]
    (cp_id, cp), = synth_managed.of_type("AWS::Lambda::CapacityProvider").items()
    config = props["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert config["CapacityProviderArn"] == {"Fn::GetAtt": [cp_id, "Arn"]}
    assert config["PerExecutionEnvironmentMaxConcurrency"] == 96  # meterline:managed-concurrency
    # One vCPU per environment (uvicorn is one process): memory per vCPU = the function's memory.
    assert props["MemorySize"] == c.MANAGED_MIN_MEMORY_MB  # cdk.json's 1024 is raised to the LMI minimum
    assert config["ExecutionEnvironmentMemoryGiBPerVCpu"] == props["MemorySize"] / 1024
    assert props["Runtime"] == f"python{c.MANAGED_PYTHON_VERSION}"
    assert "SnapStart" not in props  # an on-demand feature
    assert props["Architectures"] == cp["Properties"]["InstanceRequirements"]["Architectures"] == ["arm64"]
    assert cp["Properties"]["CapacityProviderScalingConfig"]["MaxVCpuCount"] == c.DEFAULT_MANAGED_MAX_VCPUS
    # Many requests per environment through the web adapter, streamed.
    env = props["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap" and env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert any("LambdaAdapterLayer" in str(layer) for layer in props["Layers"])
    # Managed instances run published versions: the streaming URL serves alias `live` on one.
    version_id, _ = synth_managed.one("AWS::Lambda::Version", FunctionName={"Ref": fn_id})
    _, alias = synth_managed.one("AWS::Lambda::Alias", Name=c.GATEWAY_ALIAS)
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    _, url = synth_managed.one("AWS::Lambda::Url", AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert url["Properties"]["Qualifier"] == c.GATEWAY_ALIAS
    assert "ReservedConcurrentExecutions" not in props  # its ceiling is the capacity provider's vCPUs


def test_every_function_and_layer_moves_to_python_313_together(synth_managed):
    runtimes = {f["Properties"]["Runtime"] for f in synth_managed.of_type("AWS::Lambda::Function").values()}
    assert runtimes == {f"python{c.MANAGED_PYTHON_VERSION}"}
    for layer in synth_managed.of_type("AWS::Lambda::LayerVersion").values():
        assert layer["Properties"]["CompatibleRuntimes"] == [f"python{c.MANAGED_PYTHON_VERSION}"]


def _private_subnets(synth) -> list[str]:
    _, cp = synth.one("AWS::Lambda::CapacityProvider")
    return [ref["Ref"] for ref in cp["Properties"]["VpcConfig"]["SubnetIds"]]


def _route_table_of(synth, subnet_id: str) -> str:
    for assoc in synth.of_type("AWS::EC2::SubnetRouteTableAssociation").values():
        if assoc["Properties"]["SubnetId"] == {"Ref": subnet_id}:
            return assoc["Properties"]["RouteTableId"]["Ref"]
    raise AssertionError(f"no route table for {subnet_id}")


def test_instances_sit_in_private_subnets_with_one_nat_and_a_dynamodb_endpoint(synth_managed):
    subnets = _private_subnets(synth_managed)
    # One private subnet per AZ: 2 in an environment-agnostic synth (Fn::GetAZs; every region has 2),
    # up to VPC_MAX_AZS when the stack is pinned to an account and region.
    assert 2 <= len(subnets) <= c.VPC_MAX_AZS
    for subnet_id in subnets:
        assert synth_managed.resources[subnet_id]["Properties"]["MapPublicIpOnLaunch"] is False
    tables = {_route_table_of(synth_managed, s) for s in subnets}
    routes = [r["Properties"] for r in synth_managed.of_type("AWS::EC2::Route").values()]
    for table in tables:  # the default route of every private subnet is the NAT gateway
        [default] = [r for r in routes if r["RouteTableId"] == {"Ref": table}
                     and r["DestinationCidrBlock"] == "0.0.0.0/0"]
        assert "NatGatewayId" in default
    assert len(synth_managed.of_type("AWS::EC2::NatGateway")) == 1
    _, endpoint = synth_managed.one("AWS::EC2::VPCEndpoint", VpcEndpointType="Gateway")
    assert "dynamodb" in str(endpoint["Properties"]["ServiceName"])
    assert {t["Ref"] for t in endpoint["Properties"]["RouteTableIds"]} >= tables
    _, flow = synth_managed.one("AWS::EC2::FlowLog")
    assert flow["Properties"]["TrafficType"] == "REJECT"


def test_instances_take_no_ingress_and_only_https_egress(synth_managed):
    _, cp = synth_managed.one("AWS::Lambda::CapacityProvider")
    [sg_ref] = cp["Properties"]["VpcConfig"]["SecurityGroupIds"]
    sg: dict[str, Any] = synth_managed.resources[sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert not sg.get("SecurityGroupIngress")
    assert not synth_managed.of_type("AWS::EC2::SecurityGroupIngress")
    [egress] = sg["SecurityGroupEgress"]
    assert (egress["IpProtocol"], egress["FromPort"], egress["ToPort"]) == ("tcp", 443, 443)


def test_managed_synth_is_nag_and_lint_clean(synth_managed):
    violations = _nag_violations(synth_managed.validation_report)
    assert not violations, "\n".join(violations)
    assert synth_managed.synth_error is None, synth_managed.synth_error
    problems = lint_problems(synth_managed)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("context", "match"), [
    ({c.CTX_COMPUTE: "fargate"}, "meterline:compute"),
    ({c.CTX_COMPUTE: "managed-instances", c.CTX_GATEWAY_MAX_CONCURRENCY: "50"}, "managed-max-vcpus"),
    ({c.CTX_COMPUTE: "managed-instances", c.CTX_MANAGED_CONCURRENCY: "0"}, "managed-concurrency"),
    ({c.CTX_COMPUTE: "managed-instances", c.CTX_MANAGED_MAX_VCPUS: "lots"}, "managed-max-vcpus"),
])
def test_bad_compute_settings_are_refused_at_synth(context, match):
    from aws_cdk import App

    from infra_cdk.settings import ContextError, DeploySettings

    with pytest.raises(ContextError, match=match):
        DeploySettings.from_node(App(context=context).node)


def test_managed_memory_is_whole_gib_between_the_lmi_limits():
    from infra_cdk.settings import DeploySettings

    managed = {"compute": c.COMPUTE_MANAGED}
    assert DeploySettings(memory_mb=1024, **managed).gateway_memory_mb == 2048
    assert DeploySettings(memory_mb=3000, **managed).gateway_memory_mb == 3072
    assert DeploySettings(memory_mb=10240, **managed).gateway_memory_mb == c.MANAGED_MAX_MEMORY_MB
    assert DeploySettings(memory_mb=1024).gateway_memory_mb == 1024  # on-demand: as configured


def test_cost_estimate_prices_the_managed_template(synth_managed):
    from meterline import costs

    _, fn = synth_managed.function("gateway")
    config = fn["Properties"]["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert fn["Properties"]["MemorySize"] == costs.MI_ENV_MEMORY_MB
    assert fn["Properties"]["MemorySize"] / 1024 / config["ExecutionEnvironmentMemoryGiBPerVCpu"] == costs.MI_ENV_VCPUS
    assert costs.MI_ENV_CONCURRENCY == c.DEFAULT_MANAGED_CONCURRENCY
    assert len(synth_managed.of_type("AWS::EC2::NatGateway")) == 1  # one NAT gateway is priced
