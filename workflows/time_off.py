"""`TimeOffWorkflow`: the time-off overlay (away periods, roster overrides) of a deployment.

One long-lived workflow per task queue (`time-off-<task queue>`), created on first use
(update-with-start). Updates `set_away` and `set_overrides` validate (who may change what)
in their validators, so a refused change leaves no trace; query `time_off` answers the
current overlay. State is carried across continue-as-new. See `domain.time_off` for why
this is an operational overlay rather than a reviewed directory change.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.directory import TimeOff
    from domain.time_off import (
        SetAway,
        SetOverrides,
        TimeOffRefused,
        TimeOffStart,
        change,
        check,
        time_off_id,
    )

__all__ = ["TimeOffWorkflow", "time_off_id"]


def _refused(exc: TimeOffRefused) -> ApplicationError:
    return ApplicationError(str(exc), type="Forbidden", non_retryable=True)


@workflow.defn(name="TimeOff")
class TimeOffWorkflow:
    @workflow.init
    def __init__(self, start: TimeOffStart) -> None:
        self.start = start
        self.overlay = start.overlay

    @workflow.run
    async def run(self, start: TimeOffStart) -> None:
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested()
            or workflow.info().get_current_history_length()
            >= start.continue_as_new_after_events)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(start.model_copy(update={"overlay": self.overlay}))

    def _apply(self, req: SetAway | SetOverrides) -> TimeOff:
        try:
            self.overlay = change(self.overlay, req, workflow.now())
        except TimeOffRefused as exc:
            raise _refused(exc) from None
        return self.overlay

    @staticmethod
    def _check(req: SetAway | SetOverrides) -> None:
        try:
            check(req)
        except TimeOffRefused as exc:
            raise _refused(exc) from None

    @workflow.update(name="set_away")
    def set_away(self, req: SetAway) -> TimeOff:
        return self._apply(req)

    @set_away.validator
    def _validate_set_away(self, req: SetAway) -> None:
        self._check(req)

    @workflow.update(name="set_overrides")
    def set_overrides(self, req: SetOverrides) -> TimeOff:
        return self._apply(req)

    @set_overrides.validator
    def _validate_set_overrides(self, req: SetOverrides) -> None:
        self._check(req)

    @workflow.query(name="time_off")
    def time_off(self) -> TimeOff:
        return self.overlay
