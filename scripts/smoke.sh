#!/usr/bin/env bash
# Smoke-test a deployed Meterline stack: stream one completion through the gateway, then find the
# ledger record it wrote.
#
#   METERLINE_KEY=mlk_... scripts/smoke.sh STACK_NAME
#   scripts/smoke.sh STACK_NAME VIRTUAL_KEY            (the key then shows up in `ps` and history)
#
# Needs: aws CLI v2 with credentials for the stack's account and region (cloudformation
# DescribeStacks, dynamodb GetItem on the keys table, Query on the ledger table), curl, and
# sha256sum or shasum. The default model `sim/gpt-4o-mini` is Meterline's built-in simulated
# provider, so no provider key needs to be stored first; set METERLINE_SMOKE_MODEL to try a real one.
#
# Exit status: 0 all good; 1 a check failed; 2 bad usage or missing tool.
set -euo pipefail

usage() { echo "usage: METERLINE_KEY=<virtual key> $0 STACK_NAME  |  $0 STACK_NAME VIRTUAL_KEY" >&2; exit 2; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok:   $*"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
stack="$1"
key="${2:-${METERLINE_KEY:-}}"
[ -n "$key" ] || usage
model="${METERLINE_SMOKE_MODEL:-sim/gpt-4o-mini}"

for tool in aws curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
if command -v sha256sum >/dev/null; then
  sha256() { sha256sum | cut -d' ' -f1; }
elif command -v shasum >/dev/null; then
  sha256() { shasum -a 256 | cut -d' ' -f1; }
else
  echo "missing tool: sha256sum or shasum" >&2; exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

output() {
  aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text
}

gateway="$(output GatewayUrl)"
ledger="$(output LedgerTableName)"
keys="$(output KeysTableName)"
if [ -z "$gateway" ] || [ "$gateway" = "None" ]; then fail "stack $stack has no GatewayUrl output"; fi
ok "gateway $gateway"

# --- 1. a streamed completion, printed as it arrives ---------------------------------------------
# The key goes in a header file, not on curl's command line.
printf 'Authorization: Bearer %s\n' "$key" > "$tmp/auth"
chmod 600 "$tmp/auth"
day_before="$(date -u +%F)"
echo "--- streaming ${model} ---"
curl -sS -N --max-time 120 \
  -D "$tmp/headers" \
  -H @"$tmp/auth" \
  -H 'Content-Type: application/json' \
  -d "{\"model\": \"${model}\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"Say hello in five words.\"}]}" \
  "${gateway}chat/completions" | tee "$tmp/body"
echo "--- end of stream ---"

status="$(head -n1 "$tmp/headers" | awk '{print $2}')"
[ "$status" = "200" ] || fail "gateway answered HTTP $status: $(head -c 500 "$tmp/body")"
grep -qi '^content-type: text/event-stream' "$tmp/headers" || fail "response is not an SSE stream"
chunks="$(grep -c '^data: {' "$tmp/body" || true)"
[ "$chunks" -ge 1 ] || fail "no SSE data chunks in the response"
grep -q '^data: \[DONE\]' "$tmp/body" || fail "stream did not end with data: [DONE]"
ok "HTTP 200, ${chunks} SSE chunks, terminated by [DONE]"

request_id="$(grep -i '^meterline-request-id:' "$tmp/headers" | head -n1 | cut -d: -f2- | tr -d ' \r')"
[ -n "$request_id" ] || fail "no meterline-request-id response header"
ok "request id $request_id"

# --- 2. the ledger record -------------------------------------------------------------------------
# The key record (stored by hash only) names the workspace; the ledger partition is
# "<workspace>#<UTC day of the request>".
key_hash="$(printf '%s' "$key" | sha256)"
workspace="$(aws dynamodb get-item --table-name "$keys" \
  --key "{\"key_hash\": {\"S\": \"$key_hash\"}}" \
  --projection-expression workspace --query 'Item.workspace.S' --output text)"
if [ -z "$workspace" ] || [ "$workspace" = "None" ]; then fail "virtual key not found in $keys"; fi
ok "workspace $workspace"

found=""
for _ in $(seq 1 10); do
  for day in "$day_before" "$(date -u +%F)"; do
    values="{\":pk\": {\"S\": \"${workspace}#${day}\"}, \":rid\": {\"S\": \"${request_id}\"}}"
    count="$(aws dynamodb query --table-name "$ledger" \
      --key-condition-expression 'pk = :pk' --filter-expression 'request_id = :rid' \
      --expression-attribute-values "$values" --query 'Count' --output text)"
    if [ "${count:-0}" -ge 1 ]; then
      found="$day"
      break 2
    fi
  done
  sleep 1
done
[ -n "$found" ] || fail "no ledger record for request $request_id in ${workspace}#${day_before}"
aws dynamodb query --table-name "$ledger" \
  --key-condition-expression 'pk = :pk' --filter-expression 'request_id = :rid' \
  --expression-attribute-values "{\":pk\": {\"S\": \"${workspace}#${found}\"}, \":rid\": {\"S\": \"${request_id}\"}}" \
  --query 'Items[0].{model: model.S, outcome: outcome.S, cost_micros: cost_micros.N, input: input_uncached.N, output: output.N, latency_ms: latency_ms.N}' \
  --output table
ok "ledger record in partition ${workspace}#${found}"
echo "smoke test passed"
