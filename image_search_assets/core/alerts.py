"""Run-failure alerts: a JSON payload POSTed to a webhook (Dagster-free).

The payload carries a Slack-style `text` line plus structured fields, so the same URL works for
a chat webhook or an incident tool.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

MAX_ERROR_CHARS = 2000


class AlertDeliveryError(RuntimeError):
    """The webhook did not accept the alert; the sensor tick fails so the alert is visible."""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def failure_payload(
    *,
    job: str,
    run_id: str,
    partition: str | None,
    failed_steps: Sequence[Mapping[str, str]],
    error: str,
    ui_url: str,
) -> dict[str, Any]:
    """What a run-failure alert says: which job, run, day and steps failed, why, and a link."""
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    steps = [{"step": s["step"], "error": _clip(s["error"])} for s in failed_steps]
    names = ", ".join(s["step"] for s in steps) or "no step (the run itself)"
    day = f" for {partition}" if partition else ""
    return {
        "text": f"Dagster run of {job}{day} failed in {names}: {_clip(error)[:300]} <{link}>",
        "job": job,
        "run_id": run_id,
        "partition": partition,
        "failed_steps": steps,
        "error": _clip(error),
        "ui_link": link,
    }


def post_json(url: str, payload: Mapping[str, Any], *, timeout_s: float) -> int:
    """POSTs the payload as JSON; returns the HTTP status or raises AlertDeliveryError."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "image-search-alerts/0.1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        # HTTPError (non-2xx) is a URLError; the URL itself may hold a secret token, so only
        # its scheme and host go into the message.
        host = urllib.parse.urlsplit(url)
        raise AlertDeliveryError(
            f"alert webhook {host.scheme}://{host.hostname} refused the alert: {exc}"
        ) from exc
