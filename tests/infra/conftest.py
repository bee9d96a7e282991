"""Infrastructure tests: synthesize the stack once per session, offline, and inspect the template.

No AWS credentials, no network, no Docker: the synth runs with context
`meterline:skip-layer-install=true` (the dependencies layer is an empty placeholder). The app is
built with `infra_cdk.app.build`, exactly as `cdk deploy` builds it, cdk-nag included; a cdk-nag
violation does not stop the other tests (the template is still written), test_nag reports it.

Three synths:
    synth          cdk.json's defaults (arm64, 1024 MB, SnapStart), environment-agnostic like the app
    synth_x86      x86_64, 2048 MB, SnapStart off, pinned to eu-west-1 (literal ARNs), prices sync daily
    synth_managed  the data plane on Lambda Managed Instances, environment-agnostic like the app,
                   with the CloudFront + WAF edge in front of it
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# jsii prints a banner for Node releases it no longer supports; it is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from anywhere
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Synth:
    """One synthesized Meterline stack."""

    outdir: Path
    template: dict[str, Any]
    stack: Any
    validation_report: dict[str, Any] = field(default_factory=dict)
    synth_error: str | None = None

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == cfn_type}

    def one(self, cfn_type: str, **match: Any) -> tuple[str, dict[str, Any]]:
        """The single resource of `cfn_type` whose Properties contain `match`."""
        found = [
            (lid, r)
            for lid, r in self.of_type(cfn_type).items()
            if all(r.get("Properties", {}).get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, f"expected one {cfn_type} with {match}, found {[lid for lid, _ in found]}"
        return found[0]

    def function(self, service: str) -> tuple[str, dict[str, Any]]:
        """A Lambda function by its POWERTOOLS_SERVICE_NAME (gateway, admin, rollup)."""
        found = [
            (lid, r)
            for lid, r in self.of_type("AWS::Lambda::Function").items()
            if r["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME") == service
        ]
        assert len(found) == 1, f"expected one {service} function, found {len(found)}"
        return found[0]

    def role_of(self, service: str) -> str:
        _, fn = self.function(service)
        role = fn["Properties"]["Role"]["Fn::GetAtt"]
        assert role[1] == "Arn"
        return role[0]

    def statements(self, service: str) -> list[dict[str, Any]]:
        """Every IAM statement attached to the service's role (inline policies and attached ones)."""
        role_id = self.role_of(service)
        role = self.resources[role_id]["Properties"]
        out = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
        return out

    def queue_id(self, output_key: str) -> str:
        """Logical id of a queue, found through the stack output holding its URL (constants.OUT_*)."""
        return self.template["Outputs"][output_key]["Value"]["Ref"]

    def table_id(self, logical_name: str) -> str:
        """Logical id of a table, found through its stack output (`<Name>TableName`)."""
        from infra_cdk.constants import table_output_key

        return self.template["Outputs"][table_output_key(logical_name)]["Value"]["Ref"]


def _context(**overrides: Any) -> dict[str, Any]:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context.update({"meterline:skip-layer-install": True, **overrides})
    return context


def _synth(outdir: Path, context: dict[str, Any], env: dict[str, str] | None = None) -> Synth:
    import aws_cdk as cdk

    from infra_cdk import constants as c
    from infra_cdk.app import build
    from infra_cdk.nag import add_checks
    from infra_cdk.stack import MeterlineStack

    app = cdk.App(context=context, outdir=str(outdir))
    if env is None:
        app, stack = build(app)
    else:  # same construction as build(), with a concrete environment
        stack = MeterlineStack(app, c.STACK_NAME, env=cdk.Environment(**env))
        add_checks(app)
    error = None
    try:
        assembly = app.synth()
        template_path = Path(assembly.directory) / f"{stack.artifact_id}.template.json"
    except Exception as exc:  # a policy-validation failure still writes the assembly
        error = str(exc)
        template_path = outdir / f"{stack.artifact_id}.template.json"
    report_path = outdir / "validation-report.json"
    return Synth(
        outdir=outdir,
        template=json.loads(template_path.read_text()),
        stack=stack,
        validation_report=json.loads(report_path.read_text()) if report_path.exists() else {},
        synth_error=error,
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth(tmp_path_factory.mktemp("cdk-default"), _context())


@pytest.fixture(scope="session")
def synth_x86(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    context = _context(
        **{"meterline:architecture": "x86_64", "meterline:memory": "2048", "meterline:snapstart": "false",
           "meterline:reserved-concurrency": "false", "meterline:gateway-max-concurrency": "200",
           "meterline:prices-sync": "rate(1 day)",
           "meterline:prices-sync-source": "https://prices.example.com/data.json"}
    )
    return _synth(
        tmp_path_factory.mktemp("cdk-x86"), context, env={"account": "123456789012", "region": "eu-west-1"}
    )


@pytest.fixture(scope="session")
def synth_managed(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    context = _context(**{"meterline:compute": "managed-instances", "meterline:managed-concurrency": "96",
                          "meterline:edge": "cloudfront-waf"})
    return _synth(tmp_path_factory.mktemp("cdk-managed"), context)
