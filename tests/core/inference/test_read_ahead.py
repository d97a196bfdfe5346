"""ReadAhead: the next chunk's images are read in the background while this one computes."""

import threading
import time

import pytest

from image_search_assets.core.inference.read_ahead import ReadAhead

CHUNKS = [["a", "b"], ["c", "d"], ["e"]]


class Recorder:
    """A reader that records which thread read which keys."""

    def __init__(self) -> None:
        self.reads: list[tuple[tuple[str, ...], str]] = []

    def __call__(self, keys) -> list[bytes]:
        self.reads.append((tuple(keys), threading.current_thread().name))
        return [k.encode() for k in keys]

    def wait_for(self, keys, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(k == tuple(keys) for k, _ in self.reads):
            assert time.monotonic() < deadline, f"{keys} was never read ahead"
            time.sleep(0.01)


def test_each_next_chunk_is_read_in_the_background_and_handed_over_once():
    reader = Recorder()
    with ReadAhead(reader, CHUNKS) as ahead:
        assert ahead.read(["a", "b"]) == [b"a", b"b"]
        reader.wait_for(["c", "d"])  # read while chunk 1 would be computing
        assert ahead.read(["c", "d"]) == [b"c", b"d"]
        reader.wait_for(["e"])
        assert ahead.read(["e"]) == [b"e"]
    threads = {keys: thread for keys, thread in reader.reads}
    assert threads[("a", "b")] == threading.current_thread().name  # nothing to read ahead of
    assert threads[("c", "d")].startswith("read-ahead")
    assert threads[("e",)].startswith("read-ahead")
    assert len(reader.reads) == 3  # every chunk read exactly once


def test_a_skipped_chunk_is_dropped_and_the_asked_chunk_read_then():
    reader = Recorder()
    with ReadAhead(reader, CHUNKS) as ahead:
        ahead.read(["a", "b"])
        reader.wait_for(["c", "d"])
        # ["c", "d"] was finished by an earlier attempt: the stage asks for ["e"] next.
        assert ahead.read(["e"]) == [b"e"]
    assert [keys for keys, _ in reader.reads] == [("a", "b"), ("c", "d"), ("e",)]


def test_a_failed_read_ahead_fails_when_its_chunk_is_asked_for():
    calls = []

    def flaky(keys):
        calls.append(tuple(keys))
        if tuple(keys) == ("c", "d"):
            raise ConnectionError("storage went away")
        return [k.encode() for k in keys]

    with ReadAhead(flaky, CHUNKS) as ahead:
        ahead.read(["a", "b"])
        with pytest.raises(ConnectionError, match="went away"):  # not swallowed in the thread
            ahead.read(["c", "d"])
