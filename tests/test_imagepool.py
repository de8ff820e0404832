"""The image I/O pool: frames in input order, work really concurrent, memory bounded."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gtacity.engine.frames import Frame
from gtacity.engine.media.sources import SourceError
from gtacity.engine.stream.imagepool import ImageTask, PooledImageSource, PooledWriter


def test_reads_overlap_arrive_in_order_skip_failures_and_stay_bounded():
    workers, started, taken, failed = 4, [], [], []
    barrier = threading.Barrier(workers, timeout=30)  # passes only if 4 reads run at once
    lock = threading.Lock()

    def read(path: Path) -> tuple[np.ndarray, None]:
        index = int(path.name)
        with lock:
            started.append(index)
            # Never more than 2 x workers read and not yet taken (or skipped) by the consumer.
            assert len(started) - len(taken) - len(failed) <= 2 * workers
        if index < workers:
            barrier.wait()
        time.sleep(random.Random(index).uniform(0, 0.01))
        if index % 7 == 3:
            raise SourceError(f"{index}: damaged")
        return np.full((2, 2, 3), index, np.uint8), None

    tasks = [ImageTask(Path(str(i)), i) for i in range(40)]
    with ThreadPoolExecutor(workers) as pool:
        source = PooledImageSource(Path("."), tasks, pool, workers, read, lambda t, why: failed.append(t.meta))
        for frame in source:
            with lock:
                taken.append(frame.meta)
            assert frame.image[0, 0, 0] == frame.meta
    assert taken == [i for i in range(40) if i % 7 != 3] and failed == [3, 10, 17, 24, 31, 38]


def test_writes_run_concurrently_and_close_waits_for_all():
    workers, written = 3, []
    barrier = threading.Barrier(workers, timeout=30)

    def write_one(frame: Frame) -> None:
        if frame.index < workers:
            barrier.wait()  # only passes if 3 writes run at once
        written.append(frame.index)

    with ThreadPoolExecutor(workers) as pool:
        writer = PooledWriter(Path("."), pool, workers, write_one)
        for i in range(20):
            writer.write(Frame(np.zeros((2, 2, 3), np.uint8), i))
        writer.close()
        assert sorted(written) == list(range(20)) and writer.busy_s > 0
