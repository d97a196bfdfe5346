"""The platform retry policy applied to a step: the Dagster half of core/failures.py.

Retryable errors become `RetryRequested` with the capped, jittered delay of `BackoffPolicy`
(Dagster's own RetryPolicy has no cap); permanent ones become `Failure(allow_retries=False)` whose
description says what to fix. A `RetryPolicy` with a bounded delay stays on every asset as a
backstop for what no `except` can see: a step process killed outright (SIGKILL, a lost node).
Its attempts count against the same `max_retries`.

A person's stop is never retried: SIGINT (Dagster's termination of a run, Ctrl-C) and any error
of a run that is CANCELING or CANCELED raise `Terminated`; only SIGTERM of a run nobody stopped
counts as a preemption (core/failures.py). Before its work, each step also checks that it may
run at all (assets/guards.py).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from image_search_assets.assets.guards import require_sole_publisher, stop_requested
from image_search_assets.core.failures import classify, sigterm_as_preemption
from image_search_assets.core.planning.retry import BackoffPolicy


class Terminated(dg.DagsterError, dg.DagsterExecutionInterruptedError):
    """An operator stopped the run: the step fails, the run ends CANCELED, nothing retries.

    Dagster turns an interrupted step into a retry when the step has a RetryPolicy, as every
    asset here does. A DagsterError passes Dagster's op error boundary unchanged, and as a
    DagsterExecutionInterruptedError it then ends the run as a termination does without a
    policy. tests/resilience/test_terminate.py and tests/e2e/test_terminate.py pin both.
    """


def stop_if_terminated(context: dg.AssetExecutionContext) -> None:
    """Raises Terminated if the run was stopped: call it right before an irreversible act."""
    why = stop_requested(context)
    if why is not None:
        raise Terminated(f"{why}: {_step(context)} stops here and is not retried")


def _step(context: dg.AssetExecutionContext) -> str:
    return context.get_step_execution_context().step.key


def crash_retry_policy(policy: BackoffPolicy) -> dg.RetryPolicy:
    """Retries of a crashed step process: uniform in [0, first delay], never growing.

    A crashed attempt loses at most its unfinished chunk, so waiting longer buys nothing; the
    jitter spreads the retries of steps that died together with their node.
    """
    return dg.RetryPolicy(
        max_retries=policy.max_retries, delay=policy.first_delay_s, jitter=dg.Jitter.FULL
    )


def resume_scope(context: dg.AssetExecutionContext) -> str:
    """Whose finished chunks a step may reuse: its run's, across retries and re-executions."""
    return context.run.root_run_id or context.run.run_id


def _seconds_since_first_attempt(context: dg.AssetExecutionContext) -> float:
    # Each attempt may be a new process (a new k8s Job), so the clock lives in the event log.
    step_key = context.get_step_execution_context().step.key
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.STEP_START
    ).records
    starts = [r.timestamp for r in records if r.event_log_entry.step_key == step_key]
    return max(0.0, time.time() - min(starts)) if starts else 0.0


@contextmanager
def failure_policy(context: dg.AssetExecutionContext, policy: BackoffPolicy) -> Iterator[None]:
    """Runs the block under the platform's failure taxonomy and retry policy.

    Before the block: a stopped run goes no further (a retry that was already scheduled
    included), and a run that another run of the day is publishing fails without retry.
    """
    stop_if_terminated(context)
    if context.retry_number == 0:  # a retry continues work its first attempt was allowed
        require_sole_publisher(context)
    try:
        with sigterm_as_preemption():
            yield
    except (dg.Failure, dg.RetryRequested, Terminated):
        raise  # already decided, e.g. a missing previous partition
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:
        # SIGINT: the code server's termination of the run, or Ctrl-C at the CLI. Preemption
        # arrives as SIGTERM, which the block turns into Preempted.
        why = stop_requested(context) or "interrupted (SIGINT)"
        raise Terminated(f"{why}: {_step(context)} stopped and is not retried") from exc
    except Exception as exc:
        # A SIGTERM, or any error, of a terminated run: k8s stops step pods with SIGTERM.
        why = stop_requested(context)
        if why is not None:
            raise Terminated(f"{why}: {_step(context)} stopped and is not retried") from exc
        verdict = classify(exc)
        attempt = context.retry_number
        if not verdict.retryable:
            raise dg.Failure(description=verdict.message, allow_retries=False) from exc
        elapsed = _seconds_since_first_attempt(context)
        if not policy.should_retry(attempt, elapsed):
            raise dg.Failure(
                description=f"{verdict.message}. Gave up after {attempt + 1} attempt(s) over "
                f"{elapsed:.0f}s (retry.max_retries={policy.max_retries}, "
                f"retry.deadline_s={policy.deadline_s}); re-execute the run from failure.",
                allow_retries=False,
            ) from exc
        delay = policy.delay(attempt)
        context.log.warning(
            f"{verdict.kind}: {verdict.message}; retry {attempt + 1} of {policy.max_retries} "
            f"in {delay:.1f}s"
        )
        raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=delay) from exc
