"""Optional edge (context `meterline:edge=cloudfront-waf`): CloudFront + AWS WAF in front of the public
gateway URL.

    WebAcl        AWS WAF (CLOUDFRONT scope): a rate-based rule per client IP
                  (`meterline:edge-rate-limit` requests per 5 minutes, default 3000), then AWS's managed
                  common rule set (AWSManagedRulesCommonRuleSet). Its body rules are set to COUNT, not
                  BLOCK: LLM requests routinely carry bodies > 8 KB, HTML and code, which
                  SizeRestrictions_BODY / CrossSiteScripting_BODY / GenericLFI_BODY / GenericRFI_BODY /
                  EC2MetaDataSSRF_BODY would block (the gateway validates bodies itself). Metrics and
                  sampled requests are on.
    Distribution  HTTPS only, HTTP/2 and 3, caching disabled (every request is a unique, keyed POST),
                  all viewer headers but Host forwarded (a function URL refuses a foreign Host), the
                  function URL as a custom origin over TLS 1.2, 60 s origin read timeout (the time to
                  the first and between bytes; the CloudFront default quota, raisable to 180 s).
                  Streaming is preserved: CloudFront relays the chunked RESPONSE_STREAM body as it
                  arrives (no caching, no compression of text/event-stream by the origin).
    Origin check  CloudFront origin access control (OAC) for Lambda URLs would need IAM auth on the
                  URL, and Lambda then requires every POST to carry `x-amz-content-sha256` of its body,
                  which the OpenAI/Anthropic SDKs never send. Instead CloudFront adds a secret header
                  (ORIGIN_VERIFY_HEADER, from a generated Secrets Manager secret) that the gateway
                  checks (METERLINE_ORIGIN_SECRET): a request straight to the function URL, around
                  the WAF, gets 403 before any key lookup.

WAF web ACLs for CloudFront exist only in us-east-1: the stack must be deployed there (a synth pinned
to another region is refused), or given an existing web ACL (`meterline:edge-web-acl-arn`, created in
us-east-1), which is then used instead of creating one.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_wafv2 as waf
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.nag import acknowledge
from infra_cdk.settings import ContextError, DeploySettings
from meterline.config import ORIGIN_SECRET_ENV, ORIGIN_VERIFY_HEADER

# Body rules of AWSManagedRulesCommonRuleSet that misfire on LLM traffic (see the module docstring).
COUNT_ONLY_RULES = (
    "SizeRestrictions_BODY",
    "CrossSiteScripting_BODY",
    "GenericLFI_BODY",
    "GenericRFI_BODY",
    "EC2MetaDataSSRF_BODY",
)


def _visibility(name: str) -> waf.CfnWebACL.VisibilityConfigProperty:
    return waf.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )


class Edge(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings,
                 gateway: lambda_.Function, url: lambda_.FunctionUrl) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        if settings.edge_web_acl_arn is None and not Token.is_unresolved(region) and region != "us-east-1":
            raise ContextError(
                f"context {c.CTX_EDGE}={c.EDGE_CLOUDFRONT_WAF}: CloudFront web ACLs exist only in us-east-1, "
                f"this stack is in {region}; deploy it in us-east-1 or pass {c.CTX_EDGE_WEB_ACL_ARN}=<arn of a "
                "CLOUDFRONT-scope web ACL created in us-east-1>"
            )
        self.secret = secretsmanager.Secret(
            self,
            "OriginSecret",
            description="Meterline: header value CloudFront adds so the gateway can refuse requests that skip the edge",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=48),
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "A shared header value between CloudFront and the gateway, not a credential to an account or "
            "a database: rotating it means updating both in one deployment (cdk deploy), which a "
            "rotation Lambda cannot do atomically.",
        )
        value = self.secret.secret_value.unsafe_unwrap()  # a {{resolve:secretsmanager:...}} reference
        gateway.add_environment(ORIGIN_SECRET_ENV, value)

        if settings.edge_web_acl_arn is not None:
            self.web_acl_arn = settings.edge_web_acl_arn
            self.web_acl: waf.CfnWebACL | None = None
        else:
            self.web_acl = self._web_acl(settings.edge_rate_limit)
            self.web_acl_arn = self.web_acl.attr_arn

        origin = origins.FunctionUrlOrigin(
            url,
            custom_headers={ORIGIN_VERIFY_HEADER: value},
            read_timeout=Duration.seconds(60),
            keepalive_timeout=Duration.seconds(60),
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="Meterline gateway (WAF in front of the function URL)",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
                compress=False,  # SSE must flow event by event
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            web_acl_id=self.web_acl_arn,
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR1",
            "An API for SDK clients of a team's own apps: geo restrictions are an owner's choice, and "
            "the WAF rate rule and virtual keys guard the API.",
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR3",
            "Every request is already recorded by the gateway (ledger, audit) and sampled by the WAF; "
            "CloudFront standard logs would need a log bucket with ACLs for little extra.",
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR4",
            "The default *.cloudfront.net certificate cannot pin a minimum TLS version (CloudFront "
            "negotiates TLS 1.2+ with current SDKs); put a custom domain with its own ACM certificate "
            "and TLSv1.2_2021 on the distribution to enforce it (docs/DEPLOY.md).",
        )

    def _web_acl(self, rate_limit: int) -> waf.CfnWebACL:
        rules = [
            waf.CfnWebACL.RuleProperty(
                name="RatePerClientIp",
                priority=0,
                action=waf.CfnWebACL.RuleActionProperty(block={}),
                statement=waf.CfnWebACL.StatementProperty(
                    rate_based_statement=waf.CfnWebACL.RateBasedStatementProperty(
                        limit=rate_limit, aggregate_key_type="IP", evaluation_window_sec=300
                    )
                ),
                visibility_config=_visibility("MeterlineRatePerClientIp"),
            ),
            waf.CfnWebACL.RuleProperty(
                name="AWSManagedRulesCommonRuleSet",
                priority=1,
                override_action=waf.CfnWebACL.OverrideActionProperty(none={}),
                statement=waf.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=waf.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name="AWSManagedRulesCommonRuleSet",
                        rule_action_overrides=[
                            waf.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=waf.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in COUNT_ONLY_RULES
                        ],
                    )
                ),
                visibility_config=_visibility("MeterlineCommonRuleSet"),
            ),
        ]
        return waf.CfnWebACL(
            self,
            "WebAcl",
            scope="CLOUDFRONT",
            default_action=waf.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            visibility_config=_visibility("MeterlineEdge"),
            description="Meterline edge: rate limit per client IP and AWS managed common rules",
        )
