"""Compile time out of the way: JAX's persistent compilation cache, and how many compiles a run paid for.

`enable_compilation_cache()` points JAX's persistent cache at a folder (every command of the `hnm` CLI and
`train_and_evaluate` call it first), so a program compiled once (a train step for a (batch, Lq, Ld) shape, an
encoder for a length bucket) is read back from disk by later runs and by later identical compiles of the same
run. On GPU, JAX then also keeps XLA's per-fusion autotuning results there. The folder:

  HNM_COMPILATION_CACHE=<dir>   that folder; HNM_COMPILATION_CACHE=off (or 0, false, none) turns the cache off
  JAX_COMPILATION_CACHE_DIR     JAX's own setting, honoured when HNM_COMPILATION_CACHE is unset
  default                       $XDG_CACHE_HOME/hnm_jax/jax, else ~/.cache/hnm_jax/jax

Every program is written, however quick its compile (`min_compile_s` 0 unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS
is set; JAX's default skips compiles under 1 s): a tiny CPU run compiles ~110 small programs besides its train step
(eager ops, init, metrics), which add up to seconds, while reading them back is cheap and takes ~1 MB. The folder is
not size-capped (JAX's LRU cap breaks on entries written without it, e.g. by another process): delete it any time.

`CompileCounter` counts backend compiles, cache hits and their seconds between `start()` and `stop()` (JAX's
monitoring events, process-wide), for the run's log (`setup/compiles`, `setup/compile_s`, ...).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import jax
from jax import monitoring

ENV = "HNM_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")
MIN_COMPILE_S = 0.0

# JAX's monitoring events (jax/_src/dispatch.py, compiler.py). A backend compile event is recorded for every XLA
# compile, including one answered by the persistent cache (then its duration is the read).
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
CACHE_HIT = "/jax/compilation_cache/cache_hits"
CACHE_WRITE = "/jax/compilation_cache/cache_misses"  # recorded when a compiled program is written to the cache
LONG_COMPILE_S = 1.0


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/hnm_jax/jax, else ~/.cache/hnm_jax/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hnm_jax" / "jax"


def enable_compilation_cache(cache_dir: str | Path | None = None, min_compile_s: float | None = None) -> Path | None:
    """Turns JAX's persistent compilation cache on; returns its folder, or None when it is off.

    `cache_dir` (else HNM_COMPILATION_CACHE, else a folder JAX already has, else `default_cache_dir()`), see the
    module docstring. Idempotent; call it before the compiles it should serve (later calls do not move a cache
    JAX has already opened).
    """
    setting = str(cache_dir) if cache_dir is not None else os.environ.get(ENV, "").strip()
    if setting.lower() in OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    folder = Path(setting or jax.config.jax_compilation_cache_dir or default_cache_dir()).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile as before rather than fail the run
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if min_compile_s is not None or "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          MIN_COMPILE_S if min_compile_s is None else float(min_compile_s))
    return folder


class _Tally:
    """Process-wide running totals of JAX's compile events (listeners installed once, never removed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = {"backend_compiles": 0, "compile_s": 0.0, "long_compiles": 0, "cache_hits": 0,
                       "cache_writes": 0, "trace_s": 0.0}
        self.installed = False

    def install(self) -> None:
        with self.lock:
            if self.installed:
                return
            monitoring.register_event_duration_secs_listener(self._on_duration)
            monitoring.register_event_listener(self._on_event)
            self.installed = True

    def _on_duration(self, event: str, duration: float, **_: object) -> None:
        with self.lock:
            if event == BACKEND_COMPILE:
                self.values["backend_compiles"] += 1
                self.values["compile_s"] += duration
                self.values["long_compiles"] += duration >= LONG_COMPILE_S
            elif event in TRACE_EVENTS:
                self.values["trace_s"] += duration

    def _on_event(self, event: str, **_: object) -> None:
        with self.lock:
            if event == CACHE_HIT:
                self.values["cache_hits"] += 1
            elif event == CACHE_WRITE:
                self.values["cache_writes"] += 1

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.values)


_TALLY = _Tally()


class CompileCounter:
    """What JAX compiled between `start()` and `stop()` (also a context manager: `summary()` after the block).

    summary(): compiles (XLA compiles not answered by the persistent cache), compile_s (seconds in XLA compiles
    and cache reads), compile_cache_hits, compile_cache_writes, long_compiles (compiles of >= 1 s, the ones that
    matter), trace_s (tracing and lowering to StableHLO). Counts are process-wide: other threads' compiles count.
    """

    def __init__(self) -> None:
        self._start: dict[str, float] | None = None
        self._end: dict[str, float] | None = None

    def start(self) -> CompileCounter:
        _TALLY.install()
        self._start, self._end = _TALLY.snapshot(), None
        return self

    def stop(self) -> dict[str, float]:
        """Stops counting; returns `summary()`."""
        self._end = _TALLY.snapshot()
        return self.summary()

    def summary(self) -> dict[str, float]:
        if self._start is None:
            raise RuntimeError("CompileCounter.summary() before start()")
        end = self._end if self._end is not None else _TALLY.snapshot()
        d = {key: end[key] - self._start[key] for key in end}
        return {"compiles": float(d["backend_compiles"] - d["cache_hits"]), "compile_s": float(d["compile_s"]),
                "compile_cache_hits": float(d["cache_hits"]), "compile_cache_writes": float(d["cache_writes"]),
                "long_compiles": float(d["long_compiles"]), "trace_s": float(d["trace_s"])}

    def __enter__(self) -> CompileCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
