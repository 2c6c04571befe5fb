"""The two operators the promotion DAGs need beyond the providers' own.

- :class:`PromotionApproval`: the standard provider's ``ApprovalOperator`` (Required actions in the
  UI, the HITL REST API), made safe against a quick answer (apache/airflow#72716, below).
- :class:`DeferredDelay`: a wait (Argo Rollouts' ``scaleDownDelaySeconds``) that holds no worker slot.

Why ``PromotionApproval`` exists. On Airflow 3.3 an approval task writes its request, then parks
(``awaiting_input``) and its worker process exits; the executor later reports that exit as a
*success* of the same try. An answer that arrives within about a second of the request resumes the
task before the scheduler has read that report. The scheduler then finds the try ``queued`` or
``running`` while its executor says "finished", logs "reported that the task instance ... finished
with state success, but the task instance's state attribute is queued" and fails it; the resumed
process hears "Server indicated the task shouldn't be running anymore ... Task killed!". That is
the scheduler's executor-event handling (``process_executor_events``: only a ``scheduled`` resumed
try is exempt), upstream as apache/airflow#72716 (the resumed try already running) and #67287
(queued); the deferral path has the same race.

The answer itself is kept: the HITL row stays with the task instance (``ON UPDATE CASCADE`` when a
retry renumbers it). So the approval has retries, and the first try records in the task state store
that it asked. A retry of that request by Airflow (not a clear by a person, which asks again) does
not write the request again (that would erase the answer): it defers to
:class:`SettledHITLTrigger`, which reads the stored answer in the triggerer (a task process cannot
read HITL answers on 3.3.2) only after ``SETTLE_SECONDS``, long after the executor reported the
deferral, so the resumed try is not killed again. A timeout is final: it is not retried into a
second four-hour wait.

The first try does not park in ``awaiting_input`` either. On Postgres, an answer given the moment
the request appeared (here 17 ms after it, while the worker was parking the task) was stored, but
the task stayed ``awaiting_input`` with no trigger: neither Airflow 3.3.2's response handler nor the
park resumed it, so the promotion would have waited for its response timeout (the e2e test that
answers at once found it after the e2e tier moved from SQLite, which serializes the two writes, to
Postgres). So the first try too waits in :class:`SettledHITLTrigger`, which reads the stored answer
whenever it came; an answer given after the deferral still resumes the task at once through the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.triggers.hitl import HITLTrigger
from airflow.sdk import BaseOperator

log = logging.getLogger(__name__)
INLINE_SECONDS = 5.0
ANSWER_KEY = "answer"
ASKED_KEY = "approval_requested_at_try"
SETTLE_SECONDS = 10.0


def is_automatic_retry(try_number: int, max_tries: int, retries: int) -> bool:
    """Whether this try retries the same request (Airflow retried it) rather than starting a new one.

    A clear by a person raises ``max_tries`` to ``try_number + retries``, so the first try of the
    current series is ``max_tries - retries + 1`` (the task runner's own reckoning, see
    ``RuntimeTaskInstance.get_first_reschedule_date``); any later try is an automatic retry.
    """
    return try_number > max_tries - retries + 1


class SettledHITLTrigger(HITLTrigger):
    """The provider's ``HITLTrigger`` (polls the stored answer), first waiting ``poke_interval``: it
    must not fire before the executor has reported the deferral (apache/airflow#72716)."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.SettledHITLTrigger", super().serialize()[1]

    async def run(self) -> AsyncIterator[Any]:
        await asyncio.sleep(self.poke_interval)
        async for event in super().run():
            yield event


class PromotionApproval(ApprovalOperator):
    """``ApprovalOperator`` whose retries keep an answer already given (see the module docstring)."""

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.timezone import utcnow

        ti, store = context["ti"], context["task_state_store"]

        def wait_in_the_triggerer() -> None:
            self.defer(
                trigger=SettledHITLTrigger(
                    ti_id=ti.id,
                    options=self.options,
                    defaults=self.defaults,
                    params=self.serialized_params,
                    multiple=self.multiple,
                    timeout_datetime=utcnow() + self.response_timeout if self.response_timeout else None,
                    poke_interval=SETTLE_SECONDS,
                ),
                method_name="execute_complete",
            )

        if is_automatic_retry(ti.try_number, ti.max_tries, self.retries or 0) and store.get(ASKED_KEY):
            self.log.warning(
                "try %s retries a request already written (an answer may be stored): reading it in the "
                "triggerer in %.0f s instead of asking again",
                ti.try_number,
                SETTLE_SECONDS,
            )
            wait_in_the_triggerer()
        try:
            return super().execute(context)
        except TaskAwaitingInput:
            store.set(ASKED_KEY, ti.try_number)
            # Not parked in awaiting_input: an answer given while the task was being parked was
            # stored but never resumed it on Postgres (module docstring). The trigger reads the
            # stored answer whenever it came; an answer after the deferral resumes it at once.
            wait_in_the_triggerer()
            raise

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # A Reject ends in a skip, which pushes no return value: record the answer for notify.
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            answer = {"chosen_options": event["chosen_options"], "responded_by": user.get("name")}
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        return super().execute_complete(context, event)

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        if event.get("error_type") == "timeout":
            raise AirflowFailException(f"no answer within {self.response_timeout}: {event.get('error')}")
        super().process_trigger_event_error(event)


class DeferredDelay(BaseOperator):
    """Wait ``delay_seconds`` (templated) in the triggerer, not in a worker slot.

    Waits of up to ``INLINE_SECONDS`` sleep in the worker instead: a trigger that fires before the
    executor has reported the deferral races it (apache/airflow#72716, as for the approval).
    """

    template_fields = ("delay_seconds",)

    def __init__(self, *, delay_seconds: str | float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay_seconds = delay_seconds

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger
        from airflow.sdk.timezone import utcnow

        seconds = float(self.delay_seconds or 0)
        if seconds <= INLINE_SECONDS:
            time.sleep(max(0.0, seconds))
            return
        self.log.info("waiting %.0f s in the triggerer", seconds)
        self.defer(
            trigger=DateTimeTrigger(moment=utcnow() + timedelta(seconds=seconds), end_from_trigger=False),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: Any = None) -> None:
        return None
