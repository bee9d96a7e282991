"""Admin authorization, the pure part: roles, principals, and every operation declaring its role."""

from __future__ import annotations

import inspect

import pytest

from meterline.admin.access import Access, AccessDenied, candidates, normalize_principal
from meterline.admin.ops import OP_ROLES, Ops


def test_every_public_operation_declares_its_role_and_is_guarded():
    public = {name for name, fn in inspect.getmembers(Ops, inspect.isfunction) if not name.startswith("_")}
    assert public == set(OP_ROLES), f"undeclared: {public - set(OP_ROLES)}; stale: {set(OP_ROLES) - public}"
    for name in public:
        assert getattr(Ops, name).__code__.co_name == "guarded", name
    assert set(OP_ROLES.values()) == {"platform", "admin", "read", "any", "list"}
    # Every operation that changes a workspace needs admin; none that only reads does.
    for name, need in OP_ROLES.items():
        if name.startswith(("set_", "delete_", "put_", "create_", "revoke_", "update_", "grant_")):
            assert need in ("admin", "platform"), name


def test_roles_rank_and_stay_on_their_workspace():
    access = Access.from_grants("p", [("a", "read"), ("a", "admin"), ("b", "read"), ("*", "admin"), ("c", "platform")])
    assert access.roles == {"a": "admin", "b": "read"} and not access.platform  # malformed grants give nothing
    assert access.can("a", "admin") and access.can("a", "read") and access.can("b", "read")
    assert not access.can("b", "admin") and not access.can("c", "read") and not access.can(None, "read")
    assert not access.can("a", "platform")
    with pytest.raises(AccessDenied, match="may not change workspace 'b'"):
        access.require("b", "admin")
    platform = Access.from_grants("q", [("*", "platform")])
    assert platform.can("anything", "admin") and platform.can(None, "platform")
    assert not Access("nobody").known


@pytest.mark.parametrize(("given", "stored"), [
    ("arn:aws:iam::111122223333:user/alice", "arn:aws:iam::111122223333:user/alice"),
    ("arn:aws:iam::111122223333:user/eng/alice", "arn:aws:iam::111122223333:user/eng/alice"),
    ("arn:aws:iam::111122223333:role/Admins", "arn:aws:iam::111122223333:role/Admins"),
    ("arn:aws:iam::111122223333:role/aws-reserved/sso/Admins", "arn:aws:iam::111122223333:role/Admins"),
    ("arn:aws-us-gov:iam::111122223333:role/Ops", "arn:aws-us-gov:iam::111122223333:role/Ops"),
    ("local:alice", "local:alice"),
])
def test_principals_are_stored_in_one_form(given, stored):
    assert normalize_principal(given) == stored


@pytest.mark.parametrize("bad", ["*", "alice", "arn:aws:iam::*:user/alice", "arn:aws:iam::111122223333:user/*",
                                 "arn:aws:sts::111122223333:assumed-role/Admins/bob", "local:", "local:a b", ""])
def test_patterns_and_sessions_cannot_be_granted(bad):
    with pytest.raises(ValueError):
        normalize_principal(bad)


def test_a_role_session_holds_its_roles_grants():
    assert candidates("arn:aws:sts::111122223333:assumed-role/Admins/bob@example.com") == [
        "arn:aws:sts::111122223333:assumed-role/Admins/bob@example.com", "arn:aws:iam::111122223333:role/Admins"]
    assert candidates("arn:aws:iam::111122223333:user/alice") == ["arn:aws:iam::111122223333:user/alice"]


def test_meterline_api_signs_for_the_function_url(monkeypatch):
    """`meterline --stack S api ...` calls the AWS_IAM function URL as the caller: SigV4, service lambda."""
    from meterline.cli.admin_commands import _sigv4

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    headers = _sigv4("PUT", "https://abc.lambda-url.eu-west-1.on.aws/admins", b'{"role":"read"}',
                     {"content-type": "application/json"}, "eu-west-1")
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/lambda/aws4_request" in auth
    assert "content-type;host;x-amz-date" in auth and headers["host"] == "abc.lambda-url.eu-west-1.on.aws"
