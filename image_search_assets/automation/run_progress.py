"""A terminal progress bar over a run's finished steps, read from the instance's event log.

`execute_in_process` blocks and has no step callback, so a thread polls the run's step events.
"""

import threading
from types import TracebackType

import dagster as dg
from tqdm import tqdm

FINISHED = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
}


class StepProgressBar:
    """`with StepProgressBar(instance, run_id, total, desc):` shows done/total steps, rate, ETA."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        total: int,
        desc: str,
        poll_s: float = 0.5,
        position: int = 1,
    ) -> None:
        self.instance, self.run_id, self.poll_s = instance, run_id, poll_s
        self.bar = tqdm(total=total, desc=desc, unit="step", position=position, leave=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _finished_steps(self) -> int:
        return len(self.instance.get_records_for_run(self.run_id, of_type=FINISHED).records)

    def _update(self) -> None:
        self.bar.update(self._finished_steps() - self.bar.n)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._update()

    def __enter__(self) -> "StepProgressBar":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()
