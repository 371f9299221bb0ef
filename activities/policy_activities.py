"""The change-approval workflow's dry run: the proposed version against the scenario files.

`policy_dry_run` runs every `playbooks_dir/scenarios/*.yaml` whose `playbook:` names the
proposed playbook (by the id in that file, or the file's stem), with `dryrun.runner` on a
private time-skipping server: nothing is delivered. For a directory change it first checks
every active playbook against the proposed directory, then runs every scenario of every
active playbook with the proposed directory.

A scenario passes when it is valid against the directory and the playbook, and the real
incident workflow runs it to its end without error. Re-running is harmless (nothing leaves
the machine), so retries are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from temporalio import activity

from domain.directory import Directory
from domain.incident import DirectorySnapshot, PlaybookSnapshot
from domain.loader import parse_yaml, sha256, snapshot_playbook
from domain.policy_versions import (
    DIRECTORY,
    PLAYBOOK_PREFIX,
    DryRunRequest,
    DryRunSummary,
    ScenarioResult,
    unpack_text,
)
from domain.validation import PlaybookInvalid, issues_from_validation_error

log = structlog.get_logger("crisis.policy")
MAX_REPORT_CHARS = 20_000


def scenario_files(scenarios_dir: Path) -> dict[Path, str]:
    """Scenario file -> the id of the playbook it names (unreadable ones are skipped)."""
    out: dict[Path, str] = {}
    for path in sorted(scenarios_dir.glob("*.yaml")):
        try:
            data = parse_yaml(path.read_bytes(), str(path))
        except (OSError, PlaybookInvalid):
            continue
        target = data.get("playbook") if isinstance(data, dict) else None
        if not isinstance(target, str):
            continue
        playbook_path = (path.parent / target).resolve()
        playbook_id = playbook_path.stem
        try:
            named = parse_yaml(playbook_path.read_bytes(), str(playbook_path))
            if isinstance(named, dict) and isinstance(named.get("id"), str):
                playbook_id = named["id"]
        except (OSError, PlaybookInvalid):
            pass
        out[path] = playbook_id
    return out


def _directory(raw: bytes) -> DirectorySnapshot:
    from pydantic import ValidationError

    try:
        definition = Directory.model_validate(parse_yaml(raw, "directory"))
    except ValidationError as exc:
        raise PlaybookInvalid(issues_from_validation_error(exc), "directory") from None
    return DirectorySnapshot(sha256=sha256(raw), definition=definition)


async def run_scenario(path: Path, playbook: PlaybookSnapshot, directory: DirectorySnapshot,
                       public_url: str) -> ScenarioResult:
    from dryrun.report import render
    from dryrun.runner import DryRunError, run_dry_run
    from dryrun.scenario import load_scenario

    name = path.name
    try:
        scenario = load_scenario(path, directory.definition)
        report = await run_dry_run(playbook, directory, scenario, scenario_name=name,
                                   public_url=public_url)
    except PlaybookInvalid as exc:
        return ScenarioResult(scenario=name, playbook=playbook.id, passed=False,
                              error="invalid scenario: " + "; ".join(str(i) for i in exc.issues))
    except DryRunError as exc:
        return ScenarioResult(scenario=name, playbook=playbook.id, passed=False, error=str(exc))
    text = render(report)
    if len(text) > MAX_REPORT_CHARS:
        text = text[:MAX_REPORT_CHARS] + "\n... (report truncated)\n"
    return ScenarioResult(scenario=name, playbook=playbook.id, passed=True, report=text)


@dataclass
class PolicyActivities:
    playbooks_dir: Path
    public_url: str = "http://127.0.0.1:8000"

    @activity.defn(name="policy_dry_run")
    async def dry_run(self, req: DryRunRequest) -> DryRunSummary:
        scenarios = scenario_files(self.playbooks_dir / "scenarios")
        try:
            directory = _directory(unpack_text(req.directory_z))
        except PlaybookInvalid as exc:
            return DryRunSummary(passed=False, problems=[f"directory: {i}" for i in exc.issues])
        if req.subject.startswith(PLAYBOOK_PREFIX):
            texts = {req.subject[len(PLAYBOOK_PREFIX):]: req.text_z}
        else:
            assert req.subject == DIRECTORY
            texts = dict(req.playbooks_z)
        problems: list[str] = []
        playbooks: dict[str, PlaybookSnapshot] = {}
        for playbook_id, packed in sorted(texts.items()):
            try:
                playbooks[playbook_id] = snapshot_playbook(
                    unpack_text(packed), directory.definition, playbook_id)
            except PlaybookInvalid as exc:
                problems += [f"playbook {playbook_id}: {i}" for i in exc.issues]
        results: list[ScenarioResult] = []
        for path, playbook_id in scenarios.items():
            playbook = playbooks.get(playbook_id)
            if playbook is None:
                continue
            activity.heartbeat(path.name)
            result = await run_scenario(path, playbook, directory, self.public_url)
            log.info("policy_dry_run_scenario", subject=req.subject, number=req.number,
                     scenario=path.name, passed=result.passed, error=result.error)
            results.append(result)
        note = (f"{len(results)} scenario(s) run" if results else
                "no scenario file names " + (", ".join(sorted(texts)) or "these playbooks")
                + ": only validation was checked")
        passed = not problems and all(r.passed for r in results)
        return DryRunSummary(passed=passed, scenarios=results, problems=problems, note=note)
