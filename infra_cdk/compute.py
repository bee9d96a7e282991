"""Managed-instances compute (context `meterline:compute=managed-instances`): where the data plane runs
when traffic is sustained.

On-demand Lambda bills every streamed request a whole execution environment's GB-seconds while it
waits on the provider. Lambda Managed Instances (LMI) run the same function on EC2 instances that
Lambda provisions, patches and scales in this account; one execution environment takes many requests
at once (the web adapter forwards concurrent invocations to the one uvicorn process, which is
asyncio: waiting on a provider costs no CPU). It no longer scales to zero: LMI keeps (by default)
three environments spread over the AZs, so this mode is for steady traffic.

    Vpc              10.40.0.0/16, up to 3 AZs: a public subnet per AZ (the NAT gateway's only) and a
                     private subnet per AZ (the instances). ONE NAT gateway: the instances must reach
                     the providers (OpenAI, Anthropic, ...) on the internet, and with NAT they also reach
                     Lambda's log and metric endpoints, KMS and STS. One NAT (not one per AZ) keeps the
                     fixed cost at ~$33/month; an AZ outage of that NAT cuts egress until it is back
                     (add NAT gateways per AZ for that, see docs/DEPLOY.md).
    DynamoDB gateway endpoint   free: every request's store calls stay off the NAT (no $0.045/GB
                     processing charge, one hop less). Interface endpoints (logs, KMS) are NOT added:
                     ~$7/month each per AZ, and their traffic is small (logs) or rare (KMS: a provider
                     key is decrypted once per environment).
    Flow logs        rejected traffic only, to a 30-day log group (what an audit asks for, cheaply).
    SecurityGroup    no ingress at all (invocations arrive through Lambda, not the network); egress
                     TCP 443 only: providers and AWS APIs are HTTPS. A provider on another port (a
                     self-hosted model server) needs an egress rule added here.
    CapacityProvider the instances: private subnets, the stack's architecture, a vCPU ceiling
                     (`meterline:managed-max-vcpus`, the cost ceiling), the operator role Lambda
                     uses to run them (AWS's managed policy AWSLambdaManagedEC2ResourceOperator).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.layer import architecture
from infra_cdk.nag import acknowledge
from infra_cdk.settings import DeploySettings


class ManagedCompute(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(c.VPC_CIDR),
            max_azs=c.VPC_MAX_AZS,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="egress", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="instances", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
            ],
            # Nothing runs in the default security group (the instances have their own, below), so the
            # custom resource that strips its rules (a Node.js Lambda in this stack) is not worth adding.
            restrict_default_security_group=False,
            gateway_endpoints={
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.vpc.add_flow_log(
            "Rejected",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "Instances",
            vpc=self.vpc,
            allow_all_outbound=False,
            description="Meterline managed instances: no ingress; HTTPS egress to providers and AWS APIs",
        )
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                            "HTTPS to model providers and AWS APIs")
        self.capacity_provider = lambda_.CapacityProvider(
            self,
            "CapacityProvider",
            subnets=self.vpc.private_subnets,
            security_groups=[self.security_group],
            architectures=[architecture(settings)],
            max_v_cpu_count=settings.managed_max_vcpus,
        )
        acknowledge(
            self.capacity_provider,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AWSLambdaManagedEC2ResourceOperator]",
            "The capacity provider's operator role carries AWSLambdaManagedEC2ResourceOperator, the AWS "
            "managed policy Lambda documents for running managed instances; its EC2 actions are "
            "conditioned on resources Lambda itself manages.",
        )

    def attach(self, function: lambda_.Function) -> None:
        """Run `function` on the capacity provider: one vCPU per environment (uvicorn is one
        process), the function's memory per vCPU, `meterline:managed-concurrency` requests each."""
        self.capacity_provider.add_function(
            function,
            per_execution_environment_max_concurrency=self.settings.managed_concurrency,
            execution_environment_memory_gib_per_v_cpu=self.settings.gateway_memory_mb / 1024,
        )
