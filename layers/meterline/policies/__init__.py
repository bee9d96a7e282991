"""Request policies (PRODUCT.md §8): model allow/deny lists, IP allowlists, usage schedules,
max_tokens caps, request size limits and PII redaction, attached to a workspace or to its keys,
members, departments or features. Pure: `model` (the stored values), `engine` (compiled sets and
evaluation; the order and "deny wins" are documented there), `ip` (the caller's address), `pii`
(redaction and restoration). The gateway's thin stage is `gateway/policy_stage.py`.
"""
