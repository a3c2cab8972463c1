"""One figure, a column per mode: provider tokens/s against the limit, queue depth, copilot latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from ops.storm.run import MODES  # noqa: E402

LANE_COLOURS = {"interactive": "tab:green", "standard": "tab:orange", "batch": "tab:blue"}
CLIP = 3.0  # the tokens/s axis stops at this multiple of the limit: the first burst would flatten the rest
LABELS = {"waiting": "{lane}: waiting for admission", "sent": "{lane}: admitted, waiting for a worker",
          "pending": "{lane}: pending at the callers (incl. retry back-off)"}


def _xy(points: list[Any]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def _provider(ax: Any, line: dict[str, Any], tpm: int, headroom: float, top_429: float) -> None:
    t, tokens = _xy(line["tokens_per_s"])
    ax.plot(t, tokens, color="tab:blue", lw=1, label="accepted tokens/s")
    ax.axhline(tpm / 60, color="black", ls="--", lw=1, label=f"TPM limit ({tpm // 1000}k/min)")
    ax.axhline(tpm * headroom / 60, color="grey", ls=":", lw=1, label=f"x headroom {headroom:g}")
    ax.set_ylim(0, CLIP * tpm / 60)
    peak = max(tokens, default=0.0)
    if peak > CLIP * tpm / 60:
        ax.annotate(f"burst peak {peak / 1000:.0f}k/s (clipped)", xy=(t[tokens.index(peak)], CLIP * tpm / 60),
                    xytext=(6, -10), textcoords="offset points", fontsize=7, color="tab:blue")
    twin = ax.twinx()
    twin.plot(*_xy(line["r429_per_s"]), color="tab:red", lw=1, label="429/s")
    twin.set_ylim(0, top_429)
    twin.set_ylabel("provider 429 / s", color="tab:red")
    twin.tick_params(axis="y", colors="tab:red")
    ax.set_ylabel("tokens / s at the provider")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper right", fontsize=7)


def _queues(ax: Any, line: dict[str, Any]) -> None:
    queues = line["queues"]
    if not queues:
        return
    t = [q["t"] for q in queues]
    for key in sorted({k for q in queues for k in q if k != "t"}):
        kind, lane = key.split(":")
        values = [q.get(key, 0) for q in queues]
        if not any(values):
            continue
        ax.plot(t, values, color=LANE_COLOURS[lane], ls=":" if kind == "sent" else "-", lw=1.2,
                label=LABELS[kind].format(lane=lane))
    ax.set_ylabel("jobs queued")
    ax.legend(loc="upper right", fontsize=7)


def _copilot(ax: Any, line: dict[str, Any]) -> None:
    ok = [(t, v) for t, v in line["copilot"] if v is not None]
    failed = [t for t, v in line["copilot"] if v is None]
    ax.scatter(*_xy(ok), s=4, color="tab:green", label="copilot latency (succeeded)")
    if failed:  # drawn along the bottom edge, whatever the latency scale
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(failed, [0.03] * len(failed), s=12, marker="x", color="tab:red", transform=bottom,
                   label=f"copilot failed ({len(failed)})")
    ax.set_yscale("log")
    ax.set_ylabel("copilot latency (s)")
    ax.legend(loc="upper right", fontsize=7)


def _cpu(ax: Any, line: dict[str, Any]) -> None:
    for role, points in sorted(line.get("cpu_cores", {}).items()):
        ax.plot(*_xy(points), lw=1, label=role)
    ax.axhline(2, color="black", ls="--", lw=1, label="all cores (2)")
    ax.set_ylabel("CPU cores used")
    ax.legend(loc="upper left", fontsize=7, ncol=2)


def plot(lines: dict[str, dict[str, Any]], tpm: int, headroom: float, path: Path) -> None:
    modes = [m for m in MODES if m in lines]
    fig, axes = plt.subplots(4, len(modes), figsize=(6 * len(modes), 14), squeeze=False, sharex=True)
    top_429 = max([v for line in lines.values() for _, v in line["r429_per_s"]] + [1.0]) * 1.1
    for col, mode in enumerate(modes):
        line = lines[mode]
        _provider(axes[0][col], line, tpm, headroom, top_429)
        _queues(axes[1][col], line)
        _copilot(axes[2][col], line)
        _cpu(axes[3][col], line)
        axes[3][col].set_xlabel("seconds since start")
        axes[0][col].set_title(MODES[mode])
        for row in axes:
            row[col].axvline(line["storm_at"], color="tab:purple", lw=1, ls="-.")
    for row in axes[1:]:  # the same scale across modes, so the columns compare at a glance
        top = max(ax.get_ylim()[1] for ax in row)
        bottom = min(ax.get_ylim()[0] for ax in row)
        for ax in row:
            ax.set_ylim(bottom, top)
    fig.suptitle("The storm: a summarizer backlog lands on a live copilot (dash-dot line = the storm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
