"""A run's record: ``metrics.jsonl`` (one JSON object a line: training records carry ``step`` and ``loss``,
events carry ``event``) and the learning curve drawn from it, ``learning_curve.png``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to ``metrics.jsonl`` in the main process; the other DDP ranks write nothing."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._last_plot = 0.0

    def repair(self) -> None:
        """A record torn by a kill: start the next one on a line of its own."""
        if self.enabled and self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def __call__(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def plot(self, every_s: float = 0.0) -> None:
        """Redraw ``learning_curve.png`` beside the log; with ``every_s``, only when the last drawing is older
        (matplotlib costs seconds: not after every short epoch)."""
        if not self.enabled or (every_s and time.perf_counter() - self._last_plot <= every_s):
            return
        self._last_plot = time.perf_counter()
        plot_curve(self.path, self.path.with_name("learning_curve.png"))


def read_records(path: Path) -> list[dict[str, Any]]:
    recs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:  # a line torn by a kill or power cut is not worth dying over at the end of an epoch
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            recs.append(rec)
    return recs


def plot_curve(metrics: Path, png: Path) -> None:
    """Training loss against the update count, with the dev metric of each epoch on a second axis."""
    if not metrics.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_records(metrics)
    steps = [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
    devs = [r for r in recs if r.get("event") == "epoch"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(*zip(*steps), label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if devs:
        m = "wer" if "wer" in devs[0] else "bleu"
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in devs], [r[m] for r in devs], "o-", color="tab:red", label=f"dev {m}")
        ax2.set_ylabel(f"dev {m}")
    ax.set_title("learning curve")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
