"""The four functions: runtime, entry points, URLs, streaming, SnapStart, layers, the stream mapping.

The alerts function's schedule and permissions are in test_cdk_alerts.py."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c

LWA_ARM = f":{c.LWA_ACCOUNT}:layer:LambdaAdapterLayerArm64:{c.LWA_LAYER_VERSION}"


def _env(fn):
    return fn["Properties"]["Environment"]["Variables"]


# --- data plane -----------------------------------------------------------------------------------


def test_gateway_runtime_and_size(synth):
    _, fn = synth.function("gateway")
    props = fn["Properties"]
    assert props["Runtime"] == f"python{c.PYTHON_VERSION}"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == c.DEFAULT_MEMORY_MB
    assert props["Timeout"] == 900
    assert props["Handler"] == "run.sh"


def test_gateway_runs_behind_the_web_adapter(synth):
    _, fn = synth.function("gateway")
    env = _env(fn)
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert env["PORT"] == "8080"
    layers = fn["Properties"]["Layers"]
    # The public LWA layer of the deploy region: arn:aws:lambda:${AWS::Region}:753240598075:...
    lwa = [layer for layer in layers if isinstance(layer, dict) and "Fn::Join" in layer]
    assert len(lwa) == 1
    parts = lwa[0]["Fn::Join"][1]
    assert parts[0] == "arn:aws:lambda:"
    assert parts[1] == {"Ref": "AWS::Region"}
    assert parts[2] == LWA_ARM
    # ...plus the dependencies layer and the application layer built by this stack.
    own = [layer for layer in layers if isinstance(layer, dict) and "Ref" in layer]
    assert {synth.resources[layer["Ref"]]["Type"] for layer in own} == {"AWS::Lambda::LayerVersion"}
    assert len(own) == 2


def test_gateway_url_streams_through_snapstart_alias(synth):
    fn_id, fn = synth.function("gateway")
    assert fn["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    version_id, _ = synth.one("AWS::Lambda::Version", FunctionName={"Ref": fn_id})
    alias_id, alias = synth.one("AWS::Lambda::Alias", Name=c.GATEWAY_ALIAS)
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    _, url = synth.one("AWS::Lambda::Url", AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    assert url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert url["Properties"]["Qualifier"] == c.GATEWAY_ALIAS
    # Public URL: both permissions Lambda requires for a function URL (since Oct 2025), on the alias.
    perms = {
        p["Properties"]["Action"]: p["Properties"]
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": alias_id}
    }
    assert perms["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert perms["lambda:InvokeFunctionUrl"]["Principal"] == "*"
    assert perms["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True


def test_x86_without_snapstart_in_a_pinned_region(synth_x86):
    fn_id, fn = synth_x86.function("gateway")
    props = fn["Properties"]
    assert props["Architectures"] == ["x86_64"]
    assert props["MemorySize"] == 2048
    assert "SnapStart" not in props
    assert (
        f"arn:aws:lambda:eu-west-1:{c.LWA_ACCOUNT}:layer:LambdaAdapterLayerX86:{c.LWA_LAYER_VERSION}"
        in (props["Layers"])
    )
    assert not synth_x86.of_type("AWS::Lambda::Alias")
    _, url = synth_x86.one("AWS::Lambda::Url", AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    assert url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert "Qualifier" not in url["Properties"]
    for layer in synth_x86.of_type("AWS::Lambda::LayerVersion").values():
        assert layer["Properties"]["CompatibleArchitectures"] == ["x86_64"]
    for service in ("admin", "rollup", "alerts", "waste", "focus"):  # one dependency layer: every function on its arch
        assert synth_x86.function(service)[1]["Properties"]["Architectures"] == ["x86_64"]


# --- control plane --------------------------------------------------------------------------------


def test_admin_is_buffered_and_iam_authenticated(synth):
    fn_id, fn = synth.function("admin")
    props = fn["Properties"]
    assert props["Handler"] == "handler.handler"
    assert props["Runtime"] == f"python{c.PYTHON_VERSION}"
    assert props["Architectures"] == ["arm64"]
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in _env(fn)
    _, url = synth.one("AWS::Lambda::Url", AuthType="AWS_IAM")
    assert url["Properties"]["InvokeMode"] == "BUFFERED"
    assert url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    # No resource policy opens it to anyone: callers need IAM permissions of their own.
    assert not [
        p
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": fn_id}
    ]


# --- aggregation ----------------------------------------------------------------------------------


def test_rollup_consumes_the_ledger_stream_safely(synth):
    fn_id, fn = synth.function("rollup")
    assert fn["Properties"]["Handler"] == "handler.handler"
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping", FunctionName={"Ref": fn_id})
    props = mapping["Properties"]
    assert props["BatchSize"] == 100
    # The handler isolates poison records itself; bisection could split a committed run.
    assert props["BisectBatchOnFunctionError"] is False
    assert props["ParallelizationFactor"] == c.ROLLUP_PARALLELIZATION > 1
    assert props["MaximumBatchingWindowInSeconds"] == c.ROLLUP_BATCHING_WINDOW_S
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 0 < props["MaximumRetryAttempts"] <= 10_000  # bounded (-1 would mean forever)
    assert props["StartingPosition"] == "TRIM_HORIZON"
    dlq_id = synth.queue_id(c.OUT_DLQ_URL)
    dlq = synth.resources[dlq_id]
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    _, policy = synth.one("AWS::SQS::QueuePolicy", Queues=[{"Ref": dlq_id}])
    deny_insecure = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert deny_insecure


# --- all functions --------------------------------------------------------------------------------


def test_reserved_concurrency_guards_the_control_plane(synth, synth_x86):
    """The public URL cannot starve admin, rollup or alerts; the gateway cap is opt-in."""
    for service, reserved in c.RESERVED_CONCURRENCY.items():
        assert synth.function(service)[1]["Properties"]["ReservedConcurrentExecutions"] == reserved
        assert "ReservedConcurrentExecutions" not in synth_x86.function(service)[1]["Properties"]
    assert "ReservedConcurrentExecutions" not in synth.function("gateway")[1]["Properties"]
    assert synth_x86.function("gateway")[1]["Properties"]["ReservedConcurrentExecutions"] == 200
    assert c.RESERVED_CONCURRENCY["rollup"] >= 4 * c.ROLLUP_PARALLELIZATION  # a few busy shards


@pytest.mark.parametrize("value", ["-3", "many"])
def test_a_bad_gateway_cap_is_refused_at_synth(value):
    from aws_cdk import App

    from infra_cdk.settings import ContextError, DeploySettings

    app = App(context={c.CTX_GATEWAY_MAX_CONCURRENCY: value})
    with pytest.raises(ContextError, match="gateway-max-concurrency"):
        DeploySettings.from_node(app.node)


@pytest.mark.parametrize("service", ["gateway", "admin", "rollup", "alerts", "waste", "focus", "replay"])
def test_powertools_environment_and_logs(synth, service):
    _, fn = synth.function(service)
    env = _env(fn)
    assert env["POWERTOOLS_SERVICE_NAME"] == service
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Meterline"
    assert env["LOG_LEVEL"] == "INFO"
    group_id = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert synth.resources[group_id]["Properties"]["RetentionInDays"] == c.LOG_RETENTION_DAYS


def test_each_function_has_its_own_role(synth):
    roles = {synth.role_of(service) for service in ("gateway", "admin", "rollup", "alerts", "waste", "focus", "replay")}
    assert len(roles) == 7
    for role_id in roles:
        role = synth.resources[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_layers_target_the_runtime(synth):
    layers = synth.of_type("AWS::Lambda::LayerVersion")
    assert len(layers) == 2
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == [f"python{c.PYTHON_VERSION}"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


# --- entry points the application code provides ---------------------------------------------------


def _top_level_names(path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_gateway_entrypoint_contract():
    import os

    run = c.GATEWAY_ASSET / c.GATEWAY_HANDLER
    assert run.is_file() and os.access(run, os.X_OK), f"{run} must exist and be executable"
    text = run.read_text()
    assert text.startswith("#!")
    assert "meterline.gateway.app:create_app" in text and "--factory" in text
    assert "PORT" in text and "/opt/python" in text


@pytest.mark.parametrize(
    ("asset", "handler"),
    [(c.ADMIN_ASSET, c.ADMIN_HANDLER), (c.ROLLUP_ASSET, c.ROLLUP_HANDLER), (c.ALERTS_ASSET, c.ALERTS_HANDLER),
     (c.REPLAY_ASSET, c.REPLAY_HANDLER)],
)
def test_python_entrypoints_define_handler(asset, handler):
    module, attr = handler.split(".")
    assert attr in _top_level_names(asset / f"{module}.py")


def test_synth_finds_every_entrypoint(synth):
    rules = [
        v["ruleName"]
        for p in synth.validation_report.get("pluginReports", [])
        for v in p["violations"]
        if v["ruleName"].endswith("-entrypoint")
    ]
    assert not rules
