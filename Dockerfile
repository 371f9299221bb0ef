# crisis-engine image: one image for both processes.
#   API (default):  crisis api --host 0.0.0.0 --port 8000
#   worker:         crisis worker            (docker-compose.yml overrides the command)
# Configuration comes from CRISIS_* environment variables (core/config.py).

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 crisis \
 && useradd --system --uid 10001 --gid crisis --home-dir /app --shell /usr/sbin/nologin crisis

# Dependencies first, in their own layer, so a code change does not reinstall them. Only the
# runtime set (`[project] dependencies`): the dev stack's server binaries (the `dev` extra:
# Temporal dev/test servers, Valkey, aiosmtpd) stay out of the image. `--compile` writes the
# .pyc files now, so a read-only container never compiles at start.
# EXTRAS adds optional runtime extras, e.g. `docker build --build-arg EXTRAS=otel .` for
# tracing; `dev` and `test` are refused (they are the server binaries and test tools).
ARG EXTRAS="dryrun"
COPY pyproject.toml README.md /src/
RUN case " $EXTRAS " in *" dev "*|*" test "*) echo "EXTRAS may not name dev or test" >&2; exit 1;; esac \
 && python -c "import sys, tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + [r for e in sys.argv[1:] for r in p['optional-dependencies'][e]]))" $EXTRAS > /tmp/requirements.txt \
 && pip install --compile -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The packages that pyproject.toml installs ([tool.setuptools.packages.find]).
COPY domain/ /src/domain/
COPY workflows/ /src/workflows/
COPY activities/ /src/activities/
COPY api/ /src/api/
COPY core/ /src/core/
COPY cli/ /src/cli/
COPY readmodel/ /src/readmodel/
COPY worker/ /src/worker/
COPY dryrun/ /src/dryrun/
RUN pip install --compile --no-deps /src && rm -rf /src

# Data the processes read at run time: playbooks, the directory and the routing table.
# Installed code can't find them next to itself, so their paths are set explicitly.
WORKDIR /app
COPY playbooks/ /app/playbooks/
COPY config/ /app/config/
COPY deploy/worker_healthcheck.py /app/deploy/worker_healthcheck.py
RUN python -m compileall -q /app/deploy
# /keys: the command-signing key shared by the API and workers (compose volume actor-key)
RUN mkdir -p /data /keys && chown crisis:crisis /data /keys
ENV CRISIS_PLAYBOOKS_DIR=/app/playbooks \
    CRISIS_DIRECTORY_FILE=/app/config/directory.yaml \
    CRISIS_TOKENS_FILE=/data/tokens.json

USER crisis
# Hashed API tokens (written by `crisis users issue-tokens`) persist here.
VOLUME ["/data"]
# 8000: the API (and its /metrics); 9464: the worker's Temporal SDK metrics when enabled
EXPOSE 8000 9464

# Liveness of the API process; the worker's compose service replaces it with its own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["crisis", "api", "--host", "0.0.0.0", "--port", "8000"]
