"""A local sink for the demo playbooks' webhooks and actions (`/demo/sink/{name}`).

POST records the JSON body in the Redis list `ce:sink:{name}` (the newest 500 are kept);
GET lists them oldest first. Loopback clients (the worker of `make run`) need no token;
anyone else needs the admin role. This lets `make run` show published statements and
Slack-style notifications without any external service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from domain.directory import IDENT_PATTERN, AccessRole

from .. import auth
from ..deps import RedisDep, ServicesDep, principal_for_token
from ..errors import responses
from ..schemas import SinkAck, SinkEntry, SinkList

router = APIRouter(prefix="/demo/sink", tags=["demo"])

SINK_CAP = 500
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
SinkName = Annotated[str, Path(pattern=IDENT_PATTERN, examples=["publish"])]
_bearer = HTTPBearer(auto_error=False)


def sink_key(name: str) -> str:
    return f"ce:sink:{name}"


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return host in LOOPBACK or host.startswith("127.")


async def loopback_or_admin(
    request: Request, services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if _from_loopback(request):
        return
    if credentials is None:
        raise auth.unauthorized("the demo sink needs a token when called from another host")
    principal = principal_for_token(services, credentials.credentials)
    if principal is None:
        raise auth.unauthorized("invalid or revoked token")
    principal.require(frozenset({AccessRole.admin}), "the demo sink")


SinkAccess = Annotated[None, Depends(loopback_or_admin)]


@router.post("/{name}", response_model=SinkAck, summary="Record a webhook or action call",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object"},
                 "example": {"text": "We've seen the posts and we're looking into it."}}}}},
             responses=responses(401, 403, 413, 422))
async def record(name: SinkName, request: Request, redis: RedisDep, _: SinkAccess) -> SinkAck:
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    entry = json.dumps({"received_at": datetime.now(UTC).isoformat(), "body": body})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(sink_key(name), entry)
        pipe.ltrim(sink_key(name), -SINK_CAP, -1)
        pipe.llen(sink_key(name))
        _, _, stored = await pipe.execute()
    return SinkAck(name=name, stored=int(stored))


@router.get("/{name}", response_model=SinkList, summary="What the sink received, oldest first",
            responses=responses(401, 403, 422))
async def listing(name: SinkName, redis: RedisDep, _: SinkAccess) -> SinkList:
    raws = await redis.lrange(sink_key(name), 0, -1)
    return SinkList(name=name, items=[SinkEntry.model_validate_json(r) for r in raws])
