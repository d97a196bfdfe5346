"""Weighted GPU admission: Airflow's `pool_slots`, as a pure decision (Dagster-free).

A step needing n GPUs starts only when n slots of its GPU pool are free, all at once: it never
holds a partial claim, so no two steps can deadlock each other. The oldest waiter (by priority,
then arrival) gets a reservation: later steps may only use slots beyond what it needs, so a
4-GPU step is not starved by a stream of 1-GPU steps. A waiter that needs more GPUs than the
pool has can never run, so it gets no reservation (and is told why) instead of blocking all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    admit: bool
    need: int
    free: int
    limit: int
    reserved: int = 0

    @property
    def message(self) -> str:
        if self.admit:
            return f"granted {self.need} GPU(s); {self.free - self.need} of {self.limit} left free"
        if self.need > self.limit:
            return (
                f"needs {self.need} GPU(s) but the pool's budget is {self.limit}: raise the "
                "pool limit or lower this category's GPUs"
            )
        text = f"waiting: needs {self.need} GPU(s), {self.free} of {self.limit} free"
        if self.reserved:
            text += f", {self.reserved} reserved for an earlier step"
        return text


def decide(need: int, free: int, limit: int, ahead: Sequence[int] = ()) -> Decision:
    """Whether a step needing `need` GPUs may start now.

    `ahead` lists the GPU needs of steps queued before this one, in queue order.
    """
    if need < 1:
        raise ValueError(f"a GPU step needs at least 1 GPU, got {need}")
    reserved = next((n for n in ahead if n <= limit), 0)
    admit = need <= limit and free - reserved >= need
    return Decision(admit=admit, need=need, free=free, limit=limit, reserved=reserved)
