"""A local sink for the demo playbooks' webhooks and actions (`/demo/sink/{name}`).

It exists only in demo mode (`CRISIS_DEMO_MODE=true`, set by `crisis stack run` and
`make run`), and there it needs no token: it stands in for Slack or a CMS on a developer's
machine, so that `make run` shows published statements and notifications without any
external service. Outside demo mode the routes are not mounted at all (404): behind a
reverse proxy every request comes from loopback, so "only loopback clients" is no guard.

POST records the body in the Redis list `ce:sink:{name}` (the newest 500 are kept); GET
lists them oldest first. POST honours `Idempotency-Key` the way a real receiver should:
the first request with a key stores the body and its answer, in one atomic step; a
repeat with the same key stores nothing and gets the first answer again, with
`Idempotent-Replayed: true` (keys are kept 24 h).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response

from domain.directory import IDENT_PATTERN

from ..deps import RedisDep
from ..errors import ApiError, responses
from ..schemas import SinkAck, SinkEntry, SinkList

router = APIRouter(prefix="/demo/sink", tags=["demo"])

SINK_CAP = 500
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
SinkName = Annotated[str, Path(pattern=IDENT_PATTERN, max_length=64, examples=["publish"])]
SinkKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255,
    pattern=r"^[!-~](?:[ -~]{0,253}[!-~])?$",  # printable ASCII, no surrounding spaces
    description="The same key stores once; a repeat gets the first answer")]


def sink_key(name: str) -> str:
    return f"ce:sink:{name}"


def sink_idempotency_key(name: str, key: str) -> str:
    return f"ce:sink-idem:{name}:{key}"


# KEYS[1] the list, KEYS[2] the idempotency record (or "" without a key);
# ARGV[1] the entry, ARGV[2] the cap, ARGV[3] the record's TTL.
# Answers {replayed (0/1), stored}.
_RECORD = """
if KEYS[2] ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {1, tonumber(seen)} end
end
local stored = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
stored = math.min(stored, tonumber(ARGV[2]))
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], stored, 'EX', tonumber(ARGV[3])) end
return {0, stored}
"""


@router.post("/{name}", response_model=SinkAck, summary="Record a webhook or action call",
             operation_id="recordSinkCall",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {},
                 "example": {"text": "We've seen the posts and we're looking into it."}}}}},
             responses={200: {"headers": {"Idempotent-Replayed": {
                 "description": "`true` when this answers a repeated Idempotency-Key",
                 "schema": {"type": "string", "enum": ["true"]}}}},
                 **responses(413, 422, 503)})
async def record(name: SinkName, request: Request, redis: RedisDep, response: Response,
                 idempotency_key: SinkKey = None) -> SinkAck:
    raw = await request.body()
    if not raw:
        raise ApiError(422, "the sink records a request body; this request has none")
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    entry = json.dumps({"received_at": datetime.now(UTC).isoformat(), "body": body})
    idem = sink_idempotency_key(name, idempotency_key) if idempotency_key else ""
    replayed, stored = await redis.eval(
        _RECORD, 2, sink_key(name), idem, entry, SINK_CAP, IDEMPOTENCY_TTL_SECONDS)
    if int(replayed):
        response.headers["Idempotent-Replayed"] = "true"
    return SinkAck(name=name, stored=int(stored))


@router.get("/{name}", response_model=SinkList, summary="What the sink received, oldest first",
            operation_id="listSinkCalls", responses=responses(422, 503))
async def listing(name: SinkName, redis: RedisDep) -> SinkList:
    raws = await redis.lrange(sink_key(name), 0, -1)
    return SinkList(name=name, items=[SinkEntry.model_validate_json(r) for r in raws])
