"""The routing rule for reports that open an incident: severity -> default playbook.

Read from `routing.yaml` next to the directory file (`config/routing.yaml`); when that file
is absent the built-in table below applies. A route may name the severity the incident
opens at, for report severities no playbook accepts (the demo playbooks have no `low`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from domain.directory import IDENT_PATTERN
from domain.playbook import Severity

ROUTING_FILE = "routing.yaml"


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    playbook: str = Field(pattern=IDENT_PATTERN)
    severity: Severity | None = None  # None: the report's own severity


def _default_routes() -> dict[Severity, Route]:
    return {
        Severity.low: Route(playbook="viral-complaint", severity=Severity.medium),
        Severity.medium: Route(playbook="viral-complaint"),
        Severity.high: Route(playbook="viral-complaint"),
        Severity.critical: Route(playbook="data-breach-rumour"),
    }


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_severity: Severity = Severity.medium
    routes: dict[Severity, Route] = Field(default_factory=_default_routes)

    def route(self, severity: Severity | None) -> tuple[str, Severity] | None:
        """(playbook id, severity to open at) for a report, or None if nothing routes it."""
        wanted = severity or self.default_severity
        route = self.routes.get(wanted)
        return None if route is None else (route.playbook, route.severity or wanted)

    @classmethod
    def load(cls, path: Path) -> RoutingTable:
        if not path.exists():
            return cls()
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})
