"""The platform's one retry policy: capped exponential backoff with jitter (Dagster-free).

Dagster's RetryPolicy grows without bound ((2**n - 1) * delay: the 10th retry of a 60 s policy
waits over 8 hours). The reference case capped it at 30 minutes; so do we. The values come from
the `retry:` section of platform.yaml (Settings.retry); core/failures.py decides what is
retryable at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    first_delay_s: float = 60.0
    max_delay_s: float = 30 * 60.0
    max_retries: int = 12
    # Give up once this much time has passed since the first attempt started (None: no deadline).
    deadline_s: float | None = 6 * 3600.0
    # +/- fraction of the delay drawn at random, so retries of many steps don't align.
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 < self.first_delay_s <= self.max_delay_s):
            raise ValueError("need 0 < first_delay_s <= max_delay_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        if self.max_retries < 0 or (self.deadline_s is not None and self.deadline_s <= 0):
            raise ValueError("need max_retries >= 0 and deadline_s > 0 (or null)")

    def base_delay(self, retry_number: int) -> float:
        """Delay before retry `retry_number` (0 = the first retry), before jitter."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(retry_number, 60))

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Jittered delay: uniform in [base * (1 - jitter), min(cap, base * (1 + jitter))].

        Drawing inside the capped range, rather than clipping a draw to the cap, keeps retries
        spread out at the cap too, where many steps failing together would otherwise align.
        """
        base = self.base_delay(retry_number)
        low, high = base * (1 - self.jitter), min(self.max_delay_s, base * (1 + self.jitter))
        return low + (high - low) * (rng or random).random()

    def should_retry(self, retry_number: int, elapsed_s: float = 0.0) -> bool:
        """Whether retry `retry_number` may still happen."""
        if retry_number >= self.max_retries:
            return False
        return self.deadline_s is None or elapsed_s + self.base_delay(retry_number) <= (
            self.deadline_s
        )
