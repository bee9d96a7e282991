"""Help for every command and option: what the parser definitions leave unsaid is filled in here,
by option name, so `meterline <command> --help` never shows a bare flag. A test walks the whole
parser and fails on any command or option without help."""

from __future__ import annotations

import argparse
from typing import Any

OPTIONS = {
    "workspace": "the workspace (default: METERLINE_WORKSPACE, else the running `meterline dev`'s demo workspace)",
    "json": "print machine-readable JSON instead of a table",
    "stack": "a deployed stack's name (or METERLINE_STACK); default: the running `meterline dev`",
    "id": "the workspace id (default: a new ws_… id)",
    "name": "a name",
    "default_provider": "the provider that bare model names go to (e.g. openai, or sim for the simulator)",
    "unpriced": "what to do with a model the catalog has no price for: reject (default) or forward unmetered",
    "timezone": "IANA time zone for days and months in budgets and reports, e.g. Europe/Paris (default UTC)",
    "member": "the person the key belongs to (spend is attributed to them)",
    "department": "the member's department (spend is attributed to it)",
    "expires_in_days": "days until the key stops working (more than 0, at most 3650)",
    "key_id": "the key's id (key_…), as `keys list` shows it",
    "model": "provider/model, e.g. openai/gpt-4o, anthropic/claude-haiku-4-5 or sim/gpt-4o-mini",
    "input": "USD per 1M input tokens",
    "output": "USD per 1M output tokens",
    "cache_read": "USD per 1M cached input tokens read (default: the input price)",
    "cache_write_5m": "USD per 1M tokens written to a 5-minute prompt cache (default: the input price)",
    "cache_write_1h": "USD per 1M tokens written to a 1-hour prompt cache (default: the input price)",
    "scope": "<type>:<value>, e.g. workspace:, member:alice, feature:search",
    "on_exhaust": "at the cap: reject (429), throttle, or downgrade",
    "key": "a key id (key_…), or * for every key of the workspace",
    "agent": "an agent name (Meterline-Agent header), or * for every agent",
    "rpm": "requests per minute",
    "rph": "requests per hour",
    "loop_throttle_after": "near-identical requests per session and window before throttling",
    "loop_reject_after": "near-identical requests per session and window before rejecting",
}
COMMANDS = {
    "workspaces create": "create a workspace",
    "workspaces set": "change a workspace's settings",
    "keys create": "create a virtual key (shown once; only its hash is stored)",
    "keys revoke": "revoke a key (stops working within the key cache TTL, 30 s by default)",
    "providers remove": "remove a provider and its stored key",
    "aliases remove": "remove an alias",
    "budgets delete": "remove a budget",
    "limits set": "set a rate limit for a key, member or agent",
    "enforcement set": "change the workspace's enforcement policy",
}


def describe_everything(parser: argparse.ArgumentParser, path: str = "") -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            existing = {choice.dest: choice for choice in action._choices_actions}
            ordered = []
            for name, sub in action.choices.items():
                full = f"{path} {name}".strip()
                pseudo = existing.get(name)
                if pseudo is None or not pseudo.help:
                    text = COMMANDS.get(full) or full
                    pseudo = argparse._SubParsersAction._ChoicesPseudoAction(name, (), text)
                ordered.append(pseudo)
                if not sub.description:
                    sub.description = pseudo.help
                describe_everything(sub, full)
            action._choices_actions[:] = ordered
        elif action.help is None and not isinstance(action, argparse._HelpAction):
            action.help = OPTIONS.get(action.dest) or _fallback(action)


def _fallback(action: Any) -> str:
    return action.dest.replace("_", " ")


def missing_help(parser: argparse.ArgumentParser, path: str = "meterline") -> list[str]:
    """Commands and options without help (the test's view of the parser)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    found.append(f"{path} {name}")
                found += missing_help(sub, f"{path} {name}")
        elif not action.help and not isinstance(action, argparse._HelpAction):
            found.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return found
