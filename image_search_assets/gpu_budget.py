"""Weighted GPU pools on Dagster's own concurrency storage.

Dagster pools give every step exactly one slot (dagster issue #12299). Here a GPU pool's slot
count is the GPU budget, and a step holds as many slot rows as it needs GPUs: the same rows the
UI's pool page shows, that `free_concurrency_slot_for_step` releases when the step ends and that
run monitoring (`free_slots_after_run_end_seconds`) returns when a run crashes.

It reaches into Dagster internals (the concurrency tables and the storage classes), one of the
few modules pyproject.toml allows to. tests/gpu_budget/test_recovery_and_internals.py pins every
internal it uses, so a Dagster upgrade that moves them fails loudly. If Dagster gains native
weighted slots, swap these storage classes for the stock ones and keep `decide`.

The pools' limits come from the categories config in one place (`gpu_pool_limits`), applied by
`apply_pool_limits` on every start: the `image-search` CLI, `python -m
image_search_assets.k8s.pools` and the `gpu_pool_limits` sensor, running by default, so that an
instance started by plain `dagster dev` gets its budget too, and a changed `gpus` reaches it.

Enable it in dagster.yaml:
    event_log_storage:
      module: image_search_assets.gpu_budget
      class: WeightedSqliteEventLogStorage        # or WeightedPostgresEventLogStorage
      config: {base_dir: ...}                     # or the postgres_db block
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable, PendingStepsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._utils.concurrency import ConcurrencyClaimStatus, ConcurrencySlotStatus
from sqlalchemy.exc import OperationalError

from image_search_assets.core.planning.gpu_admission import Decision, decide
from image_search_assets.settings import Settings
from image_search_assets.tags import GPU_POOL_PREFIX, gpu_pool, step_gpus

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
REPORT_EVERY_SECONDS = 60.0
LIVENESS_TTL_SECONDS = 10.0
WAITERS_CONSIDERED = 3


def gpu_pool_limits(settings: Settings) -> dict[str, int]:
    """{pool: GPU budget}: the sum of the GPUs of the categories of each GPU type."""
    limits: dict[str, int] = {}
    for category in settings.categories:
        pool = gpu_pool(category)
        limits[pool] = limits.get(pool, 0) + category.gpus
    return limits


def apply_pool_limits(instance: Any, limits: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Sets each pool's slot count to its limit where it differs: {pool: (was, now)} changed.

    Lowering a limit below the slots in use leaves the running steps be: Dagster deletes the
    surplus slots as they are freed.
    """
    changed = {}
    for pool, limit in limits.items():
        was = instance.event_log_storage.get_concurrency_info(pool).slot_count
        if was != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
            changed[pool] = (was, limit)
    return changed


def is_weighted(instance: Any) -> bool:
    """Whether the instance's steps hold one slot per GPU (else one per step)."""
    return isinstance(instance.event_log_storage, WeightedClaimsMixin)


class _NotAdmitted(Exception):
    def __init__(self, decision: Decision):
        self.decision = decision


class WeightedClaimsMixin:
    """`claim_concurrency_slot` for `gpu-*` pools becomes an all-or-nothing weighted claim."""

    _needs: dict[tuple[str, str], int]
    _reported: dict[tuple[str, str], tuple[float, str]]

    def _lock_pool(self, conn: Any, pool: str) -> None:
        """Serialises claims on one pool (SQLite: the first UPDATE takes the database lock)."""

    def claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None
    ) -> ConcurrencyClaimStatus:
        if not concurrency_key.startswith(GPU_POOL_PREFIX):
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)  # type: ignore[misc]
        need = self.gpu_need(run_id, step_key)
        keys = {"concurrency_key": concurrency_key, "run_id": run_id, "step_key": step_key}
        if not self.has_pending_step(**keys):  # type: ignore[attr-defined]
            # The pending row makes the waiting step visible on the UI's pool page.
            self.add_pending_step(**keys, priority=priority)  # type: ignore[attr-defined]
        try:
            # Queue and run lookups happen before the claim's transaction: holding its locks
            # while other connections query run storage can deadlock on Postgres.
            ahead = self._waiters_ahead(concurrency_key, run_id, step_key)
            decision = self._claim(concurrency_key, run_id, step_key, need, ahead)
        except _NotAdmitted as blocked:
            self._report(run_id, step_key, concurrency_key, blocked.decision)
            return ConcurrencyClaimStatus(
                concurrency_key=concurrency_key,
                slot_status=ConcurrencySlotStatus.BLOCKED,
                priority=priority,
                sleep_interval=POLL_SECONDS,
            )
        except OperationalError as e:  # SQLite "database is locked": just poll again
            log.debug("GPU claim contention on %s: %s", concurrency_key, e)
            return ConcurrencyClaimStatus(
                concurrency_key=concurrency_key,
                slot_status=ConcurrencySlotStatus.BLOCKED,
                priority=priority,
                sleep_interval=POLL_SECONDS,
            )
        self._report(run_id, step_key, concurrency_key, decision)
        return ConcurrencyClaimStatus(
            concurrency_key=concurrency_key,
            slot_status=ConcurrencySlotStatus.CLAIMED,
            priority=priority,
            assigned_timestamp=datetime.now(UTC),
        )

    def _claim(
        self, pool: str, run_id: str, step_key: str, need: int, ahead: list[int]
    ) -> Decision:
        slots = ConcurrencySlotsTable.c
        free_slots = db.and_(
            slots.concurrency_key == pool, slots.step_key.is_(None), slots.deleted.is_(False)
        )
        # One transaction, so a refused claim rolls back whole (Postgres's plain index
        # connection is AUTOCOMMIT, which would keep a partial claim).
        with self.index_transaction() as conn:  # type: ignore[attr-defined]
            self._lock_pool(conn, pool)
            # Claim first (a write takes SQLite's lock before any read), undo below if refused.
            pick = db.select(slots.id).where(free_slots).order_by(slots.id).limit(need)
            claimed = conn.execute(
                ConcurrencySlotsTable.update()
                .where(slots.id.in_(pick))
                .values(run_id=run_id, step_key=step_key)
            ).rowcount
            free_after = conn.execute(db.select(db.func.count()).where(free_slots)).scalar_one()
            limit = conn.execute(
                db.select(db.func.count()).where(
                    db.and_(slots.concurrency_key == pool, slots.deleted.is_(False))
                )
            ).scalar_one()
            decision = decide(need, free_after + claimed, limit, ahead)
            if claimed < need or not decision.admit:
                raise _NotAdmitted(decision)  # rolls the transaction back: no partial claim
            conn.execute(
                PendingStepsTable.update()
                .where(
                    db.and_(
                        PendingStepsTable.c.concurrency_key == pool,
                        PendingStepsTable.c.run_id == run_id,
                        PendingStepsTable.c.step_key == step_key,
                    )
                )
                .values(assigned_timestamp=db.func.now())
            )
        return decision

    def _waiters_ahead(self, pool: str, run_id: str, step_key: str) -> list[int]:
        """GPU needs of live steps queued before this one that hold no slots yet."""
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            holding, rows = self._queue(conn, pool)
        ahead: list[int] = []
        for r, k in rows:
            # Only the head of the queue holds a reservation; a few spares cover waiters that
            # turn out bigger than the budget (they get none).
            if (r, k) == (run_id, step_key) or len(ahead) == WAITERS_CONSIDERED:
                break
            if (r, k) not in holding and self._is_live(r):
                ahead.append(self.gpu_need(r, k))
        return ahead

    @staticmethod
    def _queue(conn: Any, pool: str) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
        """(steps holding slots, pending steps in queue order) of one pool."""
        p, s = PendingStepsTable.c, ConcurrencySlotsTable.c
        holding = {
            (r, k)
            for r, k in conn.execute(
                db.select(s.run_id, s.step_key).where(
                    db.and_(s.concurrency_key == pool, s.step_key.is_not(None))
                )
            )
        }
        rows = conn.execute(
            db.select(p.run_id, p.step_key)
            .where(p.concurrency_key == pool)
            .order_by(p.priority.desc(), p.id.asc())
        ).all()
        return holding, [(r, k) for r, k in rows]

    def _is_live(self, run_id: str) -> bool:
        """Whether the run is still going; cached briefly, since every poll asks."""
        if not hasattr(self, "_live"):
            self._live: dict[str, tuple[float, bool]] = {}
        now = time.monotonic()
        cached = self._live.get(run_id)
        if cached is None or now - cached[0] > LIVENESS_TTL_SECONDS:
            run = self._instance.get_run_by_id(run_id)  # type: ignore[attr-defined]
            cached = (now, run is not None and not run.is_finished)
            self._live[run_id] = cached
        return cached[1]

    def gpu_need(self, run_id: str, step_key: str) -> int:
        """GPUs a step needs: the run's GPU plan tag, else the step's GPU tag, else 1."""
        if not hasattr(self, "_needs"):
            self._needs, self._reported = {}, {}
        key = (run_id, step_key)
        if key not in self._needs:
            self._needs[key] = _lookup_need(self._instance, run_id, step_key)  # type: ignore[attr-defined]
        return self._needs[key]

    def _report(self, run_id: str, step_key: str, pool: str, decision: Decision) -> None:
        """Puts the admission state into the run's event log: on change, or once a minute."""
        if not hasattr(self, "_reported"):
            self._needs, self._reported = {}, {}
        key, now = (run_id, step_key), time.monotonic()
        last = self._reported.get(key)
        if last and last[1] == decision.message and now - last[0] < REPORT_EVERY_SECONDS:
            return
        self._reported[key] = (now, decision.message)
        run = self._instance.get_run_by_id(run_id)  # type: ignore[attr-defined]
        if run is not None:
            self._instance.report_engine_event(  # type: ignore[attr-defined]
                f"GPU pool {pool}: {decision.message}", run, step_key=step_key
            )


def _lookup_need(instance: Any, run_id: str, step_key: str) -> int:
    run = instance.get_run_by_id(run_id)
    if run is None or not run.execution_plan_snapshot_id:
        return 1
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    tags = next((dict(s.tags or {}) for s in snapshot.steps if s.key == step_key), {})
    return step_gpus(run.tags, tags)


class WeightedSqliteEventLogStorage(WeightedClaimsMixin, SqliteEventLogStorage):
    """SQLite event log storage with weighted GPU pools (local and test instances)."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
        return cls(inst_data=inst_data, **config_value)


def _postgres_class() -> type:
    from dagster_postgres.event_log.event_log import PostgresEventLogStorage
    from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

    class WeightedPostgresEventLogStorage(WeightedClaimsMixin, PostgresEventLogStorage):
        """Postgres event log storage with weighted GPU pools (production)."""

        def _lock_pool(self, conn: Any, pool: str) -> None:
            conn.execute(db.text("SELECT pg_advisory_xact_lock(hashtext(:pool))"), {"pool": pool})

        @classmethod
        def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
            return cls(
                inst_data=inst_data,
                postgres_url=pg_url_from_config(config_value),
                should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                token_provider=get_token_provider_from_config(config_value),
            )

    WeightedPostgresEventLogStorage.__module__ = __name__
    return WeightedPostgresEventLogStorage


def __getattr__(name: str) -> type:
    # dagster-postgres is only imported where Postgres is configured.
    if name == "WeightedPostgresEventLogStorage":
        cls = _postgres_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
