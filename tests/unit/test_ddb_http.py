"""The lean DynamoDB client's SigV4 must match botocore's signer byte for byte."""

from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from meterline.store.ddb_http import signed_headers

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def botocore_headers(body: bytes, token: str | None) -> dict[str, str]:
    request = AWSRequest(method="POST", url="https://dynamodb.eu-west-1.amazonaws.com/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.PutItem"})
    SigV4Auth(Credentials("AKIDEXAMPLE", SECRET, token), "dynamodb", "eu-west-1").add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


def test_signature_matches_botocore_with_and_without_session_token():
    body = b'{"TableName":"ledger","Item":{"pk":{"S":"a"}}}'
    for token in (None, "FQoGZXIvYXdzEJr//////////wEaDEXAMPLE"):
        theirs = botocore_headers(body, token)
        ours = signed_headers(target="DynamoDB_20120810.PutItem", body=body, host="dynamodb.eu-west-1.amazonaws.com",
                              region="eu-west-1", access_key="AKIDEXAMPLE", secret_key=SECRET, session_token=token,
                              amz_date=theirs["x-amz-date"])
        assert ours["authorization"] == theirs["authorization"]
        assert ours["x-amz-date"] == theirs["x-amz-date"]
        if token:
            assert ours["x-amz-security-token"] == theirs["x-amz-security-token"]
        assert "Signature=" in ours["authorization"] and len(ours["authorization"].rsplit("=", 1)[1]) == 64
