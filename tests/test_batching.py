"""Batching: default batch size, out-of-memory back-off, and prefetching the next case."""

from __future__ import annotations

import threading

import pytest
import torch
from doubleunet_segment.data.cases import Case
from doubleunet_segment.inference import batching

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("private_cache")


def test_default_batch_grows_on_gpu_with_smaller_slices():
    assert batching.default_batch_size(CPU) >= 1
    cuda = torch.device("cuda")
    assert batching.default_batch_size(cuda, 256 * 256) > batching.default_batch_size(cuda, 512 * 512) >= 1


def test_oom_back_off_halves_the_batch_and_covers_every_item_once():
    seen: list[int] = []
    notes: list[str] = []

    def step(a: int, b: int) -> None:
        if b - a > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(range(a, b))

    assert batching.run_in_batches(step, 21, 16, notify=notes.append) == 2
    assert seen == list(range(21)) and notes == ["out of memory: batch halved to 8"] + [
        "out of memory: batch halved to 4",
        "out of memory: batch halved to 2",
    ]


def test_oom_at_batch_one_reports_progress_and_other_errors_pass():
    def step(a: int, b: int) -> None:
        if b > 5:
            raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(batching.OutOfMemory) as err:
        batching.run_in_batches(step, 10, 4)
    assert err.value.done == 5
    with pytest.raises(ValueError):
        batching.run_in_batches(lambda a, b: (_ for _ in ()).throw(ValueError("bad")), 3, 2)


def test_prefetch_overlaps_the_next_load_and_keeps_failures_per_case():
    started = {name: threading.Event() for name in "abc"}

    def loader(name: str):
        def load():
            started[name].set()
            if name == "b":
                raise ValueError("unreadable")
            return name.upper()

        return load

    cases = [Case(n, n, "volume", loader(n)) for n in "abc"]
    out = []
    for case in batching.prefetch(cases):
        if case.name == "a":
            assert started["b"].wait(5)  # b is read while a is still being processed
        try:
            out.append(case.load())
        except ValueError as err:
            out.append(str(err))
    assert out == ["A", "unreadable", "C"]
