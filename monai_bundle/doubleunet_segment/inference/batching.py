"""Batching for speed and safety: slices per forward pass, halving on out-of-memory, empty slices, prefetch.

- :func:`default_batch_size` picks slices per forward pass per device;
- :func:`run_in_batches` halves the batch on GPU out-of-memory;
- :func:`empty_slices` finds slices that can be labelled background unseen;
- :func:`prefetch` reads the next case while one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch

__all__ = ["OutOfMemory", "default_batch_size", "empty_slices", "is_out_of_memory", "prefetch", "run_in_batches"]


def default_batch_size(device: torch.device, slice_pixels: int = 256 * 256) -> int:
    """Slices per forward pass: enough to fill a GPU (about 8 GB of activations), few on CPU.

    On CPU one 256x256 DoubleU-Net slice already keeps every core busy: batch 4 ran no faster than
    batch 1 (``benchmarks/bench_inference.py``), so only small windows are batched there.

    Args:
        device: where the model runs.
        slice_pixels: pixels per slice (or window) the network sees.

    Returns:
        1..64 on CUDA (32 slices of 256x256), 1..16 on CPU (2 slices of 256x256).
    """
    if device.type != "cuda":
        return int(max(1, min(16, 2 * (256 * 256) // slice_pixels)))
    return int(max(1, min(64, 32 * (256 * 256) // slice_pixels)))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error (CUDA's, or another backend's RuntimeError saying so)."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class OutOfMemory(RuntimeError):
    """Out of memory even at batch 1; ``done`` items were finished before it."""

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(f"out of memory at batch 1 after {done} item(s): {cause}")
        self.done = done


def run_in_batches(
    step: Callable[[int, int], None],
    total: int,
    batch: int,
    start: int = 0,
    notify: Callable[[str], None] | None = None,
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
) -> int:
    """Call ``step(a, b)`` over ``[start, total)`` in batches, halving the batch on out-of-memory.

    Returns the batch size that worked (the next call can start there). Raises :class:`OutOfMemory`
    when even one item does not fit, so the caller can move to another device and go on from ``done``.

    Args:
        step: processes items ``[a, b)``.
        total: items in all.
        batch: items per call to start with.
        start: the first item.
        notify: told each time the batch is halved.
        is_oom: whether an exception is an out-of-memory error (others propagate).

    Raises:
        OutOfMemory: even one item runs out of memory.
    """
    batch = max(1, batch)
    while start < total:
        stop = min(start + batch, total)
        try:
            step(start, stop)
        except Exception as err:  # CUDA raises OutOfMemoryError, other backends RuntimeError
            if not is_oom(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch == 1:
                raise OutOfMemory(start, err) from err
            batch //= 2
            if notify:
                notify(f"out of memory: batch halved to {batch}")
            continue
        start = stop
    return batch


def empty_slices(volume: np.ndarray, axis: int, threshold: float | None = None) -> np.ndarray:
    """Boolean per slice along ``axis`` of a (C, X, Y, Z) volume: every voxel at or below ``threshold``.

    ``None`` takes the volume's minimum, so only slices of pure padding/air count (MR zero fill,
    CT outside the field of view); a number is in the input's own units (e.g. -900 HU).

    Args:
        volume: (C, X, Y, Z).
        axis: the slice axis, 0..2 of (X, Y, Z).
        threshold: the background level, or None for the volume's minimum.

    Returns:
        Boolean array, one entry per slice along ``axis``.
    """
    limit = float(volume.min()) if threshold is None else threshold
    other = tuple(i for i in range(4) if i != axis + 1)
    return np.asarray(volume.max(axis=other) <= limit)


class _Prefetched:
    """A case's ``load`` that hands over the prefetched volume once and then lets go of it."""

    def __init__(self, future: Future) -> None:
        self._future: Future | None = future

    def __call__(self) -> object:
        future, self._future = self._future, None
        if future is None:
            raise RuntimeError("a prefetched case can be loaded only once")
        return future.result()


def prefetch(cases: Iterable, load: Callable[[object], object] = lambda case: case.load()) -> Iterator:
    """Yield ``cases`` with ``load`` already started for the next one in a background thread.

    Decoding a DICOM series or a compressed NIfTI takes seconds that otherwise add to each case;
    numpy/zlib/pydicom release the GIL for most of it. Each yielded case's ``load`` returns the
    prefetched volume (or raises its error, so a bad case still fails alone). At most two volumes
    are in memory at a time.

    Args:
        cases: dataclass instances with a ``load`` field (e.g. :class:`doubleunet_segment.data.cases.Case`).
        load: reads one case.

    Yields:
        Copies of the cases whose ``load`` returns the prefetched result once.
    """
    items = list(cases)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future: Future | None = pool.submit(load, items[0]) if items else None
        for i, case in enumerate(items):
            current = _Prefetched(future)
            future = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
            yield replace(case, load=current)
