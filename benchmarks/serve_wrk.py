"""wrk's closed loop for benchmarks/serve_load.py: random product queries over keep-alive."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
local cats = {"tops", "pants"}
request = function()
  local path = string.format("/v1/similar/%s-%06d?k=@K", cats[math.random(2)], math.random(0, @N))
  return wrk.format("GET", path)
end
done = function(s, lat)
  local e = s.errors
  io.write(string.format("WRK %d %d %d %.3f %.3f %.3f %.3f\\n", s.requests, s.duration,
    e.connect + e.read + e.write + e.status + e.timeout, lat:percentile(50) / 1000,
    lat:percentile(99) / 1000, lat:percentile(99.9) / 1000, lat.max / 1000))
end
"""


def wrk_closed(url: str, n: int, concurrency: int, seconds: float, k: int) -> dict[str, Any]:
    """wrk's closed loop: `concurrency` keep-alive connections on one thread, random products."""
    script = Path(tempfile.mkdtemp()) / "similar.lua"
    script.write_text(WRK_SCRIPT.replace("@K", str(k)).replace("@N", str(n - 1)))
    duration = f"-d{max(1, round(seconds))}s"
    argv = ["wrk", "-t1", f"-c{concurrency}", duration, "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    req, dur_us, errors, *ms = line.split()[1:]
    stats = dict(zip(("p50_ms", "p99_ms", "p99_9_ms", "max_ms"), map(float, ms), strict=True))
    qps = round(int(req) / (int(dur_us) / 1e6), 1)
    return {
        "concurrency": concurrency,
        "generator": "wrk",
        "requests": int(req),
        "errors": int(errors),
        "qps": qps,
        **stats,
    }
