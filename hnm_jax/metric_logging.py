"""Metrics to TensorBoard and `metrics.jsonl` in the workdir, written by process 0 only."""

import json
import math
from pathlib import Path

import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
    """Appends `{"step": s, **scalars}` lines to metrics.jsonl and TensorBoard scalars (process 0 only)."""

    def __init__(self, workdir: str | Path):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.enabled:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        scalars = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def write_histogram(self, step: int, name: str, values, bins: int = 20, value_range=(-1.0, 1.0)) -> None:
        """A histogram of finite `values`: TensorBoard histogram + a JSONL line with counts and bin edges."""
        if not self.enabled:
            return
        values = np.asarray(values, np.float64).ravel()
        values = values[np.isfinite(values)]
        counts, edges = np.histogram(values, bins=bins, range=value_range)
        self._jsonl.write(json.dumps({"step": step, name: {"counts": counts.tolist(), "edges": edges.tolist()}}) + "\n")
        self._jsonl.flush()
        if values.size:
            self._tb.add_histogram(name, values, step)
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
