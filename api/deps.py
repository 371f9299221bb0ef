"""FastAPI dependencies: the shared services, the current user, and role guards.

The lifespan in `api.main` builds one `Services` and keeps it on `app.state.services`;
routes ask for the parts they need with the `Annotated` aliases below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from core.config import Settings
from core.tokens import TokenStore
from domain.directory import AccessRole
from readmodel.reader import ReadModel

from . import auth
from .auth import Principal
from .intake import Intake
from .middleware import LOG_SCOPE_KEY
from .playbook_registry import PlaybookRegistry
from .routing import RoutingTable


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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_temporal(services: ServicesDep) -> Client:
    return services.temporal


def get_read_model(services: ServicesDep) -> ReadModel:
    return services.read_model


def get_redis(services: ServicesDep) -> aioredis.Redis:
    return services.redis


def get_registry(services: ServicesDep) -> PlaybookRegistry:
    return services.registry


def get_intake(services: ServicesDep) -> Intake:
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


async def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise auth.unauthorized("missing bearer token")
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
