"""Bedrock upstream: SigV4-signs each request with the process's AWS credentials, then sends it on
the pooled HTTP client.

Why not a boto3 `bedrock-runtime` client: boto3 is synchronous (a thread held per streaming
response), creating the client costs cold-start time, and its event-stream iterator would bypass the
gateway's one streaming path (timeouts, cut detection, metering in `finally`). Signing with
botocore's SigV4Auth and sending with the shared httpx client keeps Bedrock on the same path as every
other provider; only the signature differs. Credentials come from botocore's default chain: the
function's IAM role on Lambda (environment), the user's profile or SSO locally; they are resolved
once and refreshed by botocore when temporary.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from meterline.errors import UpstreamUnavailable
from meterline.providers.base import Upstream, UpstreamRequest, UpstreamResponse


class SigV4Upstream:
    def __init__(self, http: Upstream):
        self._http = http
        self._credentials: Any = None
        self._lock = threading.Lock()

    def _resolve(self) -> Any:
        with self._lock:
            if self._credentials is None:
                import botocore.session

                self._credentials = botocore.session.Session().get_credentials()
            if self._credentials is None:
                return None
            return self._credentials.get_frozen_credentials()

    def sign(self, request: UpstreamRequest, frozen: Any) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        assert request.signing
        service, region = request.signing
        aws_request = AWSRequest(method=request.method, url=request.url, data=request.body,
                                 headers=dict(request.headers))
        SigV4Auth(frozen, service, region).add_auth(aws_request)
        return dict(aws_request.headers.items())

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.signing is None:
            return await self._http.send(request)
        frozen = self._credentials.get_frozen_credentials() if self._credentials is not None else None
        if frozen is None:
            frozen = await asyncio.to_thread(self._resolve)
        if frozen is None:
            raise UpstreamUnavailable("No AWS credentials are available to call Bedrock (the function's role, "
                                      "or a local AWS profile).")
        request.headers = self.sign(request, frozen)
        return await self._http.send(request)

    async def aclose(self) -> None:
        return None
