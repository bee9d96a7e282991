"""`meterline cost-estimate` prices the stack as synthesized: its settings are the template's."""

from __future__ import annotations

from infra_cdk import constants as c
from meterline import costs


def test_cost_model_settings_are_the_templates(synth):
    d = costs.DEFAULTS
    gateway = synth.function("gateway")[1]["Properties"]
    assert gateway["MemorySize"] == d.gateway_memory_mb
    assert gateway["Architectures"] == [d.architecture]
    assert synth.function("rollup")[1]["Properties"]["MemorySize"] == d.rollup_memory_mb
    assert synth.function("alerts")[1]["Properties"]["MemorySize"] == d.alerts_memory_mb
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"]["BatchSize"] == d.rollup_batch_size
    rules = [r["Properties"]["ScheduleExpression"] for r in synth.of_type("AWS::Events::Rule").values()
             if "ScheduleExpression" in r["Properties"]]
    assert f"rate({d.alerts_schedule_minutes} minutes)" in rules
    assert d.alerts_schedule_minutes == c.ALERTS_SCHEDULE_MINUTES
    from meterline.config import Settings

    assert Settings().ledger_retention_days == d.ledger_retention_days
