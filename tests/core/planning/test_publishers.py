"""One publisher per day: the older of two runs of a day goes on; a day waits for the index of
the day before, and only where both publish the same category."""

from image_search_assets.core.planning.publishers import DayRun, blocking_run, refusal

DAILY = frozenset({"new_products", "tops__detections", "tops__annoy_index", "hats__annoy_index"})
UPSTREAM = frozenset({"new_products", "tops__detections"})


def run(run_id: str, day: str, created: float, steps=DAILY, finished=frozenset()) -> DayRun:
    return DayRun(run_id, day, "STARTED", created, frozenset(steps), frozenset(finished))


def test_the_younger_of_two_runs_of_a_day_gives_way_and_the_older_goes_on():
    old, young = run("a", "2026-11-08", 1.0), run("b", "2026-11-08", 2.0)
    blocker, why = blocking_run(young, [old])
    assert blocker is old and "run a of 2026-11-08" in why
    assert blocking_run(old, [young]) is None
    message = refusal(young, blocker, why)
    assert "stopped before any GPU work" in message and "wait for run a" in message


def test_a_day_waits_for_the_previous_days_unpublished_index_of_its_categories():
    day_n = run("n", "2026-11-08", 5.0, finished={"tops__annoy_index"})
    day_n1 = run("n1", "2026-11-09", 1.0)  # created first: age does not matter here
    blocker, why = blocking_run(day_n1, [day_n])
    assert blocker is day_n and "hats__annoy_index" in why and "tops__annoy_index" not in why
    assert blocking_run(day_n, [day_n1]) is None  # day N never waits for N+1


def test_a_backfills_detection_of_the_next_day_runs_beside_the_days_index():
    assert (
        blocking_run(run("n1", "2026-11-09", 2.0, UPSTREAM), [run("n", "2026-11-08", 1.0)]) is None
    )
    published = run("n", "2026-11-08", 1.0, finished={"tops__annoy_index", "hats__annoy_index"})
    assert blocking_run(run("n1", "2026-11-09", 2.0), [published]) is None
    assert (
        blocking_run(
            run("x", "2026-11-08", 2.0, {"pants__annoy_index"}), [run("n", "2026-11-08", 1.0)]
        )
        is None
    )
