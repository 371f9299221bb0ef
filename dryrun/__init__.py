"""Playbook dry runs: the real `IncidentWorkflow` on a private time-skipping server, with
simulation activities that deliver nothing and record what would have been sent."""
