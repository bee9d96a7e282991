"""The optional edge: CloudFront + WAF in front of the public gateway URL (synth_managed has it on)."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from infra_cdk.edge import COUNT_ONLY_RULES
from meterline.config import ORIGIN_SECRET_ENV, ORIGIN_VERIFY_HEADER


def test_no_edge_by_default(synth):
    for cfn_type in ("AWS::CloudFront::Distribution", "AWS::WAFv2::WebACL", "AWS::SecretsManager::Secret"):
        assert not synth.of_type(cfn_type)
    assert ORIGIN_SECRET_ENV not in synth.function("gateway")[1]["Properties"]["Environment"]["Variables"]


def test_waf_rate_limits_per_ip_then_common_rules_without_blocking_llm_bodies(synth_managed):
    acl_id, acl = synth_managed.one("AWS::WAFv2::WebACL")
    props = acl["Properties"]
    assert props["Scope"] == "CLOUDFRONT" and props["DefaultAction"] == {"Allow": {}}
    rate, common = sorted(props["Rules"], key=lambda r: r["Priority"])
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP" and statement["Limit"] == c.DEFAULT_EDGE_RATE_LIMIT
    assert rate["Action"] == {"Block": {}}
    group = common["Statement"]["ManagedRuleGroupStatement"]
    assert (group["VendorName"], group["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    overrides = {o["Name"]: o["ActionToUse"] for o in group["RuleActionOverrides"]}
    assert overrides == {rule: {"Count": {}} for rule in COUNT_ONLY_RULES}
    assert "SizeRestrictions_BODY" in overrides  # an 8 KB body limit would block most LLM requests
    _, dist = synth_managed.one("AWS::CloudFront::Distribution")
    assert dist["Properties"]["DistributionConfig"]["WebACLId"] == {"Fn::GetAtt": [acl_id, "Arn"]}


def test_distribution_streams_the_function_url_uncached_with_a_verified_origin(synth_managed):
    _, dist = synth_managed.one("AWS::CloudFront::Distribution")
    config = dist["Properties"]["DistributionConfig"]
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert set(behavior["AllowedMethods"]) >= {"POST", "GET", "OPTIONS"}
    assert behavior["Compress"] is False  # SSE flows event by event
    assert behavior["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # Managed-CachingDisabled
    assert behavior["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"  # AllViewerExceptHostHeader
    [origin] = config["Origins"]
    custom = origin["CustomOriginConfig"]
    assert custom["OriginProtocolPolicy"] == "https-only" and custom["OriginSSLProtocols"] == ["TLSv1.2"]
    assert custom["OriginReadTimeout"] == 60
    # The origin is the gateway's RESPONSE_STREAM function URL (its domain out of the URL).
    url_id, _ = synth_managed.one("AWS::Lambda::Url", InvokeMode="RESPONSE_STREAM")
    assert url_id in str(origin["DomainName"])
    # CloudFront adds the secret header; the gateway gets the same secret (both dynamic references).
    [header] = origin["OriginCustomHeaders"]
    assert header["HeaderName"] == ORIGIN_VERIFY_HEADER
    secret_id, _ = synth_managed.one("AWS::SecretsManager::Secret")
    env = synth_managed.function("gateway")[1]["Properties"]["Environment"]["Variables"]
    assert env[ORIGIN_SECRET_ENV] == header["HeaderValue"]
    assert "resolve:secretsmanager" in str(header["HeaderValue"]) and secret_id in str(header["HeaderValue"])
    # SDKs use the CloudFront URL.
    out = synth_managed.template["Outputs"][c.OUT_GATEWAY_URL]["Value"]
    assert "DomainName" in str(out) and "/v1/" in str(out)


def test_edge_in_another_pinned_region_needs_an_existing_web_acl(tmp_path):
    import aws_cdk as cdk

    from infra_cdk.settings import ContextError
    from infra_cdk.stack import MeterlineStack
    from tests.infra.conftest import _context

    app = cdk.App(context=_context(**{c.CTX_EDGE: c.EDGE_CLOUDFRONT_WAF}), outdir=str(tmp_path))
    with pytest.raises(ContextError, match="us-east-1"):
        MeterlineStack(app, c.STACK_NAME, env=cdk.Environment(account="123456789012", region="eu-west-1"))


@pytest.mark.parametrize("arn", ["arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/x/1", "nope"])
def test_a_bad_web_acl_arn_is_refused(arn):
    from aws_cdk import App

    from infra_cdk.settings import ContextError, DeploySettings

    with pytest.raises(ContextError, match="edge-web-acl-arn"):
        DeploySettings.from_node(App(context={c.CTX_EDGE_WEB_ACL_ARN: arn}).node)
