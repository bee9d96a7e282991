"""Where an OpenAI-format request goes on each host that speaks OpenAI's API, and how it
authenticates: OpenAI and OpenAI-compatible URLs (`<base>/<path>`, `Authorization: Bearer`) or
Azure OpenAI (`<endpoint>/openai/deployments/<deployment>/<path>?api-version=`, `api-key`).
Shared by openai_openai, responses_openai and embeddings_openai. Pure."""

from __future__ import annotations

from urllib.parse import quote

from meterline.translators.base import Target

AZURE = "azure"
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def endpoint(target: Target, path: str) -> tuple[str, dict[str, str]]:
    """(url, auth headers) for an OpenAI API `path` ("chat/completions", "responses", "embeddings")."""
    base = target.base_url.rstrip("/")
    headers: dict[str, str] = {}
    if target.kind == AZURE:
        if base.endswith("/openai"):
            base = base[: -len("/openai")]
        version = target.options.get("api_version") or DEFAULT_AZURE_API_VERSION
        url = f"{base}/openai/deployments/{quote(target.model, safe='')}/{path}?api-version={quote(version)}"
        if target.api_key:
            headers["api-key"] = target.api_key
        return url, headers
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    return f"{base}/{path}", headers
