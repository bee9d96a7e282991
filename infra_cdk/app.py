"""CDK entry point (cdk.json: `python -m infra_cdk.app`)."""

from __future__ import annotations

from aws_cdk import App

from infra_cdk import constants as c
from infra_cdk.nag import add_checks
from infra_cdk.stack import MeterlineStack


def build(app: App | None = None) -> tuple[App, MeterlineStack]:
    """The app exactly as deployed: one stack, cdk-nag AwsSolutions checks on everything."""
    app = app or App()
    stack = MeterlineStack(app, c.STACK_NAME)
    add_checks(app)
    return app, stack


if __name__ == "__main__":
    build()[0].synth()
