#!/usr/bin/env bash
# CY-LLM's REST gateway (seed 001) on enhanced-llm serve: curl calls of every route.
#
#   .venv/bin/enhanced-llm serve embedded:tiny --port 8080 --api-key secret --grpc-port 50051 --enforce-eager \
#       --kv-cache-memory-bytes 268435456 --cache-type multi --redis-url redis://127.0.0.1:6379/0
#   examples/cyllm_gateway.sh            # BASE=http://127.0.0.1:8080 KEY=secret MODEL=embedded:tiny
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8080}
KEY=${KEY:-secret}
MODEL=${MODEL:-embedded:tiny}
H=(-H "Content-Type: application/json" -H "X-API-Key: $KEY")

echo "== health";          curl -s "${H[@]}" "$BASE/api/v1/health"; echo
echo "== health details";  curl -s "${H[@]}" "$BASE/api/v1/health/details"; echo
echo "== models";          curl -s "${H[@]}" "$BASE/api/v1/models"; echo
echo "== model";           curl -s "${H[@]}" "$BASE/api/v1/models/$MODEL"; echo

BODY='{"modelId":"'"$MODEL"'","prompt":"你好，请介绍一下自己","generation":{"maxNewTokens":16,"temperature":0.0}}'
echo "== inference (twice: the second answer comes from the cache, see X-Cache)"
curl -s -D - -o /dev/stdout "${H[@]}" -d "$BODY" "$BASE/api/v1/inference" | grep -iE '^x-cache|^\{'; echo
curl -s -D - -o /dev/stdout "${H[@]}" -d "$BODY" "$BASE/api/v1/inference" | grep -iE '^x-cache|^\{'; echo

echo "== stream (SSE: one chunk per token, then [DONE])"
curl -sN "${H[@]}" -d "$BODY" "$BASE/api/v1/inference/stream"

echo "== streamWithMetadata (tenant: a cache sub-scope; tenants never share answers)"
curl -sN "${H[@]}" "$BASE/api/v1/inference/streamWithMetadata" -d '{
  "modelId": "'"$MODEL"'", "prompt": "请用中文回答",
  "generation": {"maxNewTokens": 8, "temperature": 0.0},
  "metadata": {"traceId": "trace-001", "tenant": "tenant-123", "playerId": "player-456", "locale": "zh-CN"}}'

echo "== errors"
curl -s -o /dev/stdout -w ' [%{http_code}]\n' -H "Content-Type: application/json" -d "$BODY" "$BASE/api/v1/inference"  # no key: 401
curl -s -o /dev/stdout -w ' [%{http_code}]\n' "${H[@]}" -d '{"modelId":"'"$MODEL"'"}' "$BASE/api/v1/inference"    # no prompt: 400
curl -s -o /dev/stdout -w ' [%{http_code}]\n' "${H[@]}" -d '{"modelId":"model-not-found","prompt":"x"}' "$BASE/api/v1/inference"  # 404
curl -s -o /dev/stdout -w ' [%{http_code}]\n' "${H[@]}" -d '{}' "$BASE/api/v1/training/start"                       # training: 404
