"""The pure admission rule: all-or-nothing, reservation for the oldest waiter."""

import pytest

from image_search_assets.core.planning.gpu_admission import decide


@pytest.mark.parametrize(
    "need,free,limit,ahead,admit",
    [
        (4, 4, 4, (), True),
        (4, 3, 4, (), False),  # never a partial claim
        (1, 3, 4, (4,), False),  # 3 free, but an earlier 4-GPU step reserves them
        (1, 3, 4, (2,), True),  # 3 - 2 reserved leaves 1
        (2, 4, 17, (1, 4), True),  # only the head of the queue holds a reservation
        (1, 1, 4, (8,), True),  # a waiter that can never fit gets no reservation
        (8, 17, 4, (), False),  # needs more than the budget
    ],
)
def test_decide(need, free, limit, ahead, admit):
    assert decide(need, free, limit, ahead).admit is admit


def test_messages_say_what_is_needed_and_free():
    assert decide(4, 1, 4).message == "waiting: needs 4 GPU(s), 1 of 4 free"
    assert "reserved for an earlier step" in decide(1, 2, 4, (2,)).message
    assert "raise the pool limit" in decide(8, 4, 4).message
    with pytest.raises(ValueError):
        decide(0, 4, 4)
