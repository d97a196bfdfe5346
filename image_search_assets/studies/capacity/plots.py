"""The capacity study's plots: per-day makespan per setup, and GPUs in use over one day."""

from __future__ import annotations

import math
from pathlib import Path

from image_search_assets.studies.capacity.study import SETUPS, Study, day_label
from image_search_assets.studies.capacity.supply import DAY, HOUR, Supply

COLORS = {"zonal": "tab:gray", "reference": "tab:blue", "platform": "tab:green"}


def _in_use(attempts, t0: float, t1: float) -> tuple[list[float], list[int]]:
    """A step series of GPUs in use; a hand-over at one instant is one point, not a dip."""
    deltas: dict[float, int] = {}
    for a in attempts:
        deltas[a.start_s] = deltas.get(a.start_s, 0) + a.gpus
        deltas[a.end_s] = deltas.get(a.end_s, 0) - a.gpus
    xs, ys, level = [t0], [0], 0
    for t in sorted(x for x in deltas if x <= t1):
        level += deltas[t]
        xs.append(t)
        ys.append(level)
    xs.append(t1)
    ys.append(level)
    return [(x - t0) / HOUR for x in xs], ys


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade(ax, supply: Supply, scale: float, offset: float = 0.0, zones=("a", "b")) -> None:
    for e in (e for e in supply.episodes if e.zone in zones):
        color, alpha = ("tab:red", 0.15) if e.zone == "a" else ("tab:purple", 0.35)
        ax.axvspan(
            (e.start_s - offset) / scale, (e.end_s - offset) / scale, color=color, alpha=alpha, lw=0
        )


def plot_makespan(study: Study, path: Path) -> None:
    """Per-day makespan per setup (log scale), stock-outs shaded, manual days marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(13, 4.8))
    _shade(ax, study.supply, DAY)
    for k, name in enumerate(SETUPS):
        days = study.results[name].days
        xs = [d.day + 0.15 + 0.24 * k for d in days]
        ax.bar(
            xs,
            [d.makespan_s / HOUR for d in days],
            0.22,
            align="edge",
            color=COLORS[name],
            label=study.results[name].policy.title,
        )
        for x, d in zip(xs, days, strict=True):
            if d.manual_actions:
                ax.text(
                    x + 0.11,
                    d.makespan_s / HOUR * 1.08,
                    "manual",
                    rotation=90,
                    fontsize=7,
                    ha="center",
                    va="bottom",
                )
    for d in study.workload:
        if d.sale:
            ax.text(d.day + 0.5, 0.6, "sale", ha="center", fontsize=8, color="tab:orange")
    ax.set_yscale("log")
    ax.set_yticks([0.5, 1, 2, 4, 8, 16, 32, 64], ["0.5", "1", "2", "4", "8", "16", "32", "64"])
    ax.set_ylim(0.5, 128)
    ax.set_xlim(0, study.days)
    ax.set_xticks(
        [d + 0.5 for d in range(study.days)],
        [day_label(study.supply, d).replace(" ", "\n") for d in range(study.days)],
        fontsize=6,
    )
    ax.set_ylabel("makespan (h, log)")
    ax.set_title("Per-day makespan; red: zone-A stock-outs, purple: zone B short as well")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_day(study: Study, day: int, path: Path) -> None:
    """GPUs in use per setup over one day, against the T4s its zones could supply."""
    plt = _plt()
    t0 = day * DAY
    # Up to an hour after the regional setups finish; zonal may wait for the on-call longer.
    ends = [study.results[s].days[day].end_s for s in SETUPS[1:]]
    hours = max(6.0, math.ceil((max(ends) - t0) / HOUR) + 1.0)
    fig, axes = plt.subplots(len(SETUPS), 1, figsize=(10, 7), sharex=True)
    for ax, name in zip(axes, SETUPS, strict=True):
        result = study.results[name]
        d = result.days[day]
        _shade(ax, study.supply, HOUR, t0, result.policy.zones)
        ax.step(
            *_in_use(d.attempts, t0, t0 + hours * HOUR),
            where="post",
            color=COLORS[name],
            label="GPUs in use",
        )
        grid = [t0 + m * 60.0 for m in range(int(hours * 60) + 1)]
        cap = [min(60, sum(study.supply.capacity(z, t) for z in result.policy.zones)) for t in grid]
        ax.step(
            [(t - t0) / HOUR for t in grid],
            cap,
            where="post",
            ls="--",
            color="black",
            lw=0.8,
            label="T4s obtainable (capped at 60)",
        )
        if d.budget:
            ax.axhline(d.budget, color="tab:orange", lw=0.8, label=f"GPU budget {d.budget}")
        ax.set_ylim(0, 62)
        ax.set_ylabel("GPUs")
        title = f"{result.policy.title}: {d.failures} failed attempts"
        title += f", {d.manual_actions} manual reruns" if d.manual_actions else ", no manual rerun"
        if d.end_s > t0 + hours * HOUR:
            done = study.supply.date_of(d.end_s).strftime("%m-%d %a")
            minute = int(d.end_s % DAY // 60)
            title += f"; finished {done} {minute // 60:02d}:{minute % 60:02d} after manual reruns"
        ax.set_title(title, fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlim(0, hours)
    axes[-1].set_xlabel(f"hours since 00:00 on {day_label(study.supply, day)} (run starts 03:00)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_regional(results, supply, deadline_s: float, path: Path) -> None:
    """When each day's run ended, per setup, against the deadline; region-wide T4 stock-outs
    shaded red, L4 shortfalls blue (regional.py)."""
    plt = _plt()
    days = len(next(iter(results.values())).days)
    fig, ax = plt.subplots(figsize=(13, 4.2))
    for e in supply.t4_out:
        ax.axvspan(e.start_s / DAY, e.end_s / DAY, color="tab:red", alpha=0.25, lw=0)
    for e in supply.l4_out:
        ax.axvspan(e.start_s / DAY, e.end_s / DAY, color="tab:blue", alpha=0.15, lw=0)
    colors = ("tab:gray", "tab:green", "tab:purple")
    for k, (result, color) in enumerate(zip(results.values(), colors, strict=False)):
        xs = [d.day + 0.15 + 0.24 * k for d in result.days]
        ends = [(d.end_s - d.day * DAY) / HOUR for d in result.days]
        ax.bar(xs, ends, 0.22, align="edge", color=color, label=result.policy.title)
    ax.axhline(deadline_s / HOUR, color="black", lw=1, ls="--", label="deadline 09:00")
    ax.set_ylim(0, max(12.0, ax.get_ylim()[1]))
    ax.set_xlim(0, days)
    ax.set_xticks([d + 0.5 for d in range(days)], [str(d + 1) for d in range(days)], fontsize=7)
    ax.set_xlabel("day of the month")
    ax.set_ylabel("run ended (h after 00:00)")
    ax.set_title("Region-wide T4 stock-outs (red), L4 shortfalls (blue): when each day finished")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
