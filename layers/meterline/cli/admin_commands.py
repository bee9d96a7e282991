"""`meterline admins …` (who may use the admin API, on which workspace) and `meterline api` (call it).

Grants map a principal to a role: `read` or `admin` on one workspace, or `platform` (every
workspace, creating workspaces, grants, prices). Deployed, the principal is the IAM ARN the admin
function URL authenticated (a role's sessions act with the role's grants); under `meterline dev`,
`local:<name>`, holding a local admin token. Every grant and revoke is in the audit trail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from meterline.cli import target, views


def _run(action: Any) -> Any:
    from meterline.admin.ops import OpError

    try:
        return action()
    except OpError as exc:
        sys.exit(f"error: {exc}")


def cmd_grant(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    workspace = None if args.role == "platform" else target.workspace_of(args, context)
    grant = _run(lambda: ops.grant_admin(args.principal, args.role, workspace))
    where = "every workspace (platform)" if args.role == "platform" else f"workspace {grant['workspace']}"
    print(f"granted {grant['role']} on {where} to {grant['principal']}")


def cmd_revoke(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    workspace = None if args.platform else target.workspace_of(args, context)
    removed = _run(lambda: ops.revoke_admin(args.principal, workspace))
    print(f"revoked {removed['role']} of {removed['principal']} on {removed['workspace']}")


def cmd_list(args: argparse.Namespace) -> None:
    ops, _ = target.ops(args)
    rows = _run(lambda: ops.list_admins(args.workspace, args.principal))
    if args.json:
        views.print_json(rows)
        return
    width = max([len("PRINCIPAL"), *(len(r["principal"]) for r in rows)])
    print(f"{'WORKSPACE':<20} {'ROLE':<9} {'PRINCIPAL':<{width}} GRANTED BY")
    for r in rows:
        print(f"{r['workspace']:<20} {r['role']:<9} {r['principal']:<{width}} {r['granted_by']}")


def _local_tokens(context: dict[str, Any]) -> Any:
    from pathlib import Path

    from meterline.admin.local import LocalTokens

    if not context.get("admin_dir"):
        sys.exit("error: local admin tokens belong to a running `meterline dev` (start one with "
                 "`scripts/meterline dev`); deployed, the admin API authenticates your IAM principal")
    return LocalTokens(Path(context["admin_dir"]))


def cmd_token(args: argparse.Namespace) -> None:
    """The local operator's admin token, or a new one for a local principal (it acts with its grants)."""
    from meterline.admin.access import normalize_principal
    from meterline.admin.local import OPERATOR

    _, context = target.resolve(getattr(args, "stack", None))
    tokens = _local_tokens(context)
    principal = args.principal or OPERATOR
    if not principal.startswith("local:"):
        sys.exit("error: local admin tokens are for local:<name> principals")
    try:
        normalize_principal(principal)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(tokens.mint(principal))
    if principal != OPERATOR:
        print(f"{principal} acts with its grants (`meterline admins grant --principal {principal} ...`); "
              "this token is shown once.", file=sys.stderr)


def cmd_api(args: argparse.Namespace) -> None:
    """One admin API call: locally with the dev server's operator token, deployed SigV4-signed as you."""
    import httpx

    if not args.path.startswith("/"):
        sys.exit("error: PATH starts with '/', e.g. /workspaces/demo/keys")
    body = None
    if args.data is not None:
        try:
            body = json.dumps(json.loads(args.data)).encode()
        except ValueError as exc:
            sys.exit(f"error: --data is JSON: {exc}")
    headers = {"content-type": "application/json"} if body is not None else {}
    stack = args.stack or None
    settings, context = target.resolve(stack)
    if context.get("stack"):
        url = _stack_admin_url(context["stack"]) + args.path.lstrip("/")
        headers = _sigv4(args.method, url, body, headers, settings.region)
    else:
        if not context.get("admin_url"):
            sys.exit("error: no `meterline dev` with an admin API is running (or pass --stack)")
        url = context["admin_url"] + args.path
        headers["authorization"] = f"Bearer {_local_tokens(context).operator_token()}"
    response = httpx.request(args.method, url, content=body, headers=headers, timeout=60)
    text = response.text
    with contextlib.suppress(ValueError):
        text = json.dumps(response.json(), indent=2)
    print(text)
    if response.status_code >= 400:
        sys.exit(f"error: HTTP {response.status_code}")


def _stack_admin_url(stack: str) -> str:
    import boto3

    outputs = {o["OutputKey"]: o["OutputValue"] for o in
               boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    url = outputs.get("AdminUrl")
    if not url:
        sys.exit(f"error: stack {stack} has no AdminUrl output")
    return url if url.endswith("/") else url + "/"


def _sigv4(method: str, url: str, body: bytes | None, headers: dict[str, str], region: str) -> dict[str, str]:
    """Headers of a request signed with the caller's AWS credentials (function URLs: service `lambda`)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        sys.exit("error: no AWS credentials to sign the admin API request with")
    request = AWSRequest(method=method, url=url, data=body, headers={**headers, "host": urlsplit(url).netloc})
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
    return dict(request.headers.items())


def register(sub: Any) -> None:
    admins = sub.add_parser("admins", help="who may use the admin API, on which workspace (grants)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
                            ).add_subparsers(dest="action", required=True)
    p = admins.add_parser("grant", help="give a principal read or admin on a workspace, or the platform role")
    p.add_argument("--principal", required=True,
                   help="arn:aws:iam::<account>:user/<name>, arn:aws:iam::<account>:role/<name>, or local:<name>")
    p.add_argument("--role", required=True, choices=["read", "admin", "platform"],
                   help="read: GET only; admin: every operation on the workspace; platform: every workspace, "
                        "creating workspaces, grants and prices")
    p.add_argument("--workspace", help="for read and admin (default: METERLINE_WORKSPACE or the dev workspace)")
    p.set_defaults(func=cmd_grant)
    p = admins.add_parser("revoke", help="remove a principal's grant on a workspace (or --platform)")
    p.add_argument("--principal", required=True)
    p.add_argument("--workspace")
    p.add_argument("--platform", action="store_true", help="remove the platform role instead")
    p.set_defaults(func=cmd_revoke)
    p = admins.add_parser("list", help="every grant (or one workspace's, or one principal's)")
    p.add_argument("--workspace")
    p.add_argument("--principal")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = admins.add_parser("token", help="meterline dev: the local admin API token (or a new one for local:<name>)")
    p.add_argument("--principal", help="local:<name> (default: the operator, who may do everything)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("api", help="call the admin API: the dev server's (with its local token) or --stack's "
                                   "(SigV4-signed with your AWS credentials)")
    p.add_argument("method", choices=["GET", "PUT", "POST", "DELETE"])
    p.add_argument("path", help="e.g. /workspaces/demo/keys or /whoami")
    p.add_argument("--data", help="a JSON request body")
    p.set_defaults(func=cmd_api)
