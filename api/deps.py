"""FastAPI dependencies: the shared services, the current user, and role guards.

The lifespan in `api.main` builds one `Services` and keeps it on `app.state.services`;
routes ask for the parts they need with the `Annotated` aliases below.

The current user comes from `Authorization: Bearer <token>` when that header is present
(exactly as before), otherwise from a browser session cookie (`api.web.sessions`); a
cookie-authenticated request that changes state must carry the session's CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from core.action_links import ActionLinks
from core.config import Settings
from core.tokens import TokenStore
from domain.directory import AccessRole
from readmodel.events import EventHub
from readmodel.reader import ReadModel

from . import auth
from .auth import Principal
from .errors import ApiError
from .intake import Intake
from .middleware import LOG_SCOPE_KEY
from .playbook_registry import PlaybookRegistry
from .routing import RoutingTable
from .web.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionStore, csrf_ok

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Services:
    settings: Settings
    temporal: Client
    redis: aioredis.Redis
    registry: PlaybookRegistry
    tokens: TokenStore
    read_model: ReadModel
    routing: RoutingTable
    intake: Intake
    sessions: SessionStore
    hub: EventHub
    links: ActionLinks


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    return get_services(request)


# The getters are `async` so FastAPI calls them inline: a plain `def` dependency runs in the
# thread pool, and a request with eight of them spent more on thread hand-offs than on its work.
ServicesDep = Annotated[Services, Depends(_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_temporal(services: ServicesDep) -> Client:
    return services.temporal


async def get_read_model(services: ServicesDep) -> ReadModel:
    return services.read_model


async def get_redis(services: ServicesDep) -> aioredis.Redis:
    return services.redis


async def get_registry(services: ServicesDep) -> PlaybookRegistry:
    return services.registry


async def get_intake(services: ServicesDep) -> Intake:
    return services.intake


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
ReadModelDep = Annotated[ReadModel, Depends(get_read_model)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
RegistryDep = Annotated[PlaybookRegistry, Depends(get_registry)]
IntakeDep = Annotated[Intake, Depends(get_intake)]

_bearer = HTTPBearer(auto_error=False, description="A token from `crisis users issue-tokens`")


def principal_for_token(services: Services, token: str | None) -> Principal | None:
    """The directory person behind a bearer token, or None if unknown."""
    if token is None:
        return None
    person_id = services.tokens.person_for(token)
    if person_id is None:
        return None
    person = services.registry.person(person_id)
    return Principal.of(person) if person is not None else None


async def session_of(request: Request, services: Services) -> Session | None:
    """The browser session of the request's cookie (cached on the request), or None."""
    if "ce_session" in request.scope.get("state", {}):
        cached: Session | None = request.state.ce_session
        return cached
    session = await services.sessions.get(request.cookies.get(COOKIE))
    request.state.ce_session = session
    return session


async def check_csrf(request: Request, session: Session) -> None:
    """403 unless a state-changing cookie request carries the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        supplied = value if isinstance(value, str) else None
    if not csrf_ok(session, supplied):
        raise ApiError(403, "missing or wrong CSRF token: reload the page and try again",
                            "CsrfFailed")


async def session_user(request: Request, services: Services) -> Principal | None:
    """The signed-in person of a browser session (CSRF-checked), or None."""
    session = await session_of(request, services)
    if session is None:
        return None
    person = services.registry.person(session.person_id)
    if person is None:
        return None
    await check_csrf(request, session)
    return Principal.of(person)


async def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if "authorization" in request.headers:
            raise auth.unauthorized("missing bearer token")
        principal = await session_user(request, services)
        if principal is None:
            raise auth.unauthorized("missing bearer token")
    else:
        principal = principal_for_token(services, credentials.credentials)
        if principal is None:
            raise auth.unauthorized("invalid or revoked token")
    fields = request.scope.get(LOG_SCOPE_KEY)
    if isinstance(fields, dict):
        fields["user"] = principal.id
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def _guard(roles: frozenset[AccessRole], action: str) -> Any:
    async def check(user: CurrentUser) -> Principal:
        user.require(roles, action)
        return user

    check.__name__ = f"require_{action.replace(' ', '_')}"
    return Depends(check)


IncidentWriter = Annotated[Principal, _guard(auth.INCIDENT_WRITERS, "this incident action")]
IncidentReader = Annotated[Principal, _guard(auth.INCIDENT_READERS, "listing incidents")]
InboxUser = Annotated[Principal, _guard(auth.INBOX_USERS, "the task inbox")]
PlaybookReader = Annotated[Principal, _guard(auth.PLAYBOOK_READERS, "reading playbooks")]
PlaybookAdmin = Annotated[Principal, _guard(auth.PLAYBOOK_ADMINS, "validating playbooks")]
TaskAdmin = Annotated[Principal, _guard(auth.TASK_ADMINS, "reassigning or cancelling tasks")]
