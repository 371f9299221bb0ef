"""Domain models and pure logic shared by the workflow, the activities and the API.

Nothing in this package does I/O (apart from `domain.loader`, which reads YAML files
for the CLI and the API) or imports Temporal, FastAPI or Redis, so the workflow sandbox
can import it freely.
"""
