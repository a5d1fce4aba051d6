"""A local activity's retries end at its schedule-to-close timeout, as a remote one's do.

temporalio 1.35 (its Core) ends a local activity at that timeout when an attempt times out,
but retries one whose attempts fail, however quickly, for ever, holding its workflow task open
all the while: against the Temporal dev server, an activity that raised at once, given a 4 s
schedule-to-close timeout and retries 1 s apart, was at its 30th attempt 30 s later. Here an
attempt that would begin past the timeout is refused for good instead, which is what the
timeout would have done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class LocalStepBudget(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BudgetedAttempts(next)


class _BudgetedAttempts(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        budget = info.schedule_to_close_timeout
        # Both the schedule time (that of the first attempt) and now are the worker's clock.
        if (
            info.is_local
            and info.attempt > 1
            and budget
            and datetime.now(UTC) - info.scheduled_time >= budget
        ):
            raise ApplicationError(
                f"not done in {budget.total_seconds():g} s ({info.attempt - 1} attempts)",
                type="ScheduleToCloseTimeout",
                non_retryable=True,
            )
        return await self.next.execute_activity(input)
