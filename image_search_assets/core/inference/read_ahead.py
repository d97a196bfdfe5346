"""Reading a stage's images one chunk ahead of its compute (Dagster-free).

`run_chunks` hands the stage one chunk at a time; while the engine works on chunk k, the next
chunk's images are already being read from storage in a background thread, so a step's time
is the slower of reading and computing rather than their sum. A resumed step skips finished
chunks: a chunk read ahead but then skipped is dropped, and the chunk asked for is read then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor


class ReadAhead:
    """`read(keys)` for the chunks of `chunks`, in order, each next chunk read in advance."""

    def __init__(
        self, read: Callable[[Sequence[str]], list[bytes]], chunks: Sequence[Sequence[str]]
    ) -> None:
        self._read = read
        self._next = {tuple(a): tuple(b) for a, b in zip(chunks, chunks[1:], strict=False)}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
        self._ahead: tuple[tuple[str, ...], Future[list[bytes]]] | None = None

    def read(self, keys: Sequence[str]) -> list[bytes]:
        keys = tuple(keys)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == keys:
            data = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()  # a chunk that was skipped (already finished)
            data = self._read(keys)
        following = self._next.get(keys)
        if following:
            self._ahead = (following, self._pool.submit(self._read, following))
        return data

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
