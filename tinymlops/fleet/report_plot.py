"""The rollout report's PNG (logged to MLflow): one panel per group with its own scale, its devices'
states over time as stacked steps, the engine's and operators' decisions marked across every panel
with the gate verdict that caused them, and each group's counts printed — so 4 canary devices among
10,000 are a full-height panel reading "4 devices · 4 confirmed", not a sliver."""

from __future__ import annotations

from pathlib import Path

from tinymlops.fleet.timeline import STATES, RolloutTimeline

COLORS = {"confirmed": "#16a34a", "pending": "#93c5fd", "reverted": "#9333ea", "failed": "#dc2626"}
MARK_COLORS = {
    "advance": "#15803d",
    "succeed": "#166534",
    "pause": "#d97706",
    "rollback": "#9333ea",
    "abort": "#dc2626",
}


def plot_timeline(t: RolloutTimeline, path: Path | str, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from tinymlops.util.io import atomic_path

    groups = t.groups or []
    n = max(len(groups), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.35 * n + 1.6), sharex=True, squeeze=False)
    times = [s.at for g in groups for s in g.steps] + [m.at for m in t.marks]
    for ax, g in zip(axes[:, 0], groups, strict=False):
        ax.set_ylim(0, max(g.members, 1))
        ax.set_yticks([0, max(g.members, 1)])
        ax.tick_params(axis="y", labelsize=8)
        label = f"{g.index + 1}. {g.name}\n{g.percent:g} % · {g.members:,} dev"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(axis="x", color="#e2e8f0", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if g.steps:
            # the latest state is drawn on to a little past the end, so it keeps a visible width
            tail = g.steps[-1].at + (t.end - t.start) * 0.05 if t.start and t.end else g.steps[-1].at
            x = [s.at for s in g.steps] + [max(tail, g.steps[-1].at)]
            ys = [[s.counts.get(k, 0) for s in g.steps] + [g.steps[-1].counts.get(k, 0)] for k in STATES]
            ax.stackplot(x, ys, colors=[COLORS[k] for k in STATES], step="post", labels=list(STATES))
            last = g.last
            text = " · ".join(f"{last.get(k, 0):,} {k}" for k in STATES if last.get(k, 0)) or "nothing yet"
            ax.text(
                0.995,
                0.92,
                text,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#cbd5e1", alpha=0.9),
            )
        else:
            ax.text(
                0.5, 0.5, "not reached", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#94a3b8"
            )
        for m in t.marks:
            if m.event in MARK_COLORS:
                ax.axvline(m.at, color=MARK_COLORS[m.event], linestyle="--", linewidth=1.2)
    top = axes[0, 0]
    for m in t.marks:
        if m.event in MARK_COLORS:
            why = m.reason if len(m.reason) <= 34 else m.reason[:33] + "…"
            top.annotate(
                f"{m.event}: {why}" if why else m.event,
                xy=(m.at, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 4 + 10 * (t.marks.index(m) % 2)),
                textcoords="offset points",
                fontsize=7,
                color=MARK_COLORS[m.event],
                rotation=0,
            )
    if times:
        axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        axes[-1, 0].set_xlabel("time (UTC, server clock)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in STATES]
    fig.legend(handles, list(STATES), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"rollout {t.rollout_id}: {t.status}", fontsize=11, y=0.995)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
