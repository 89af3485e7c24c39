"""Items made ahead in a thread (``model.inference.prefetch``): order, errors, early close."""

import threading
import time

import pytest

from model.inference.prefetch import Prefetched


def test_items_come_in_order_made_by_another_thread():
    makers = []

    def source():
        for i in range(50):
            makers.append(threading.current_thread().name)
            yield i

    with Prefetched(source(), depth=2, name="maker") as items:
        assert list(items) == list(range(50))
        assert next(items, "done") == "done"  # exhausted stays exhausted
    assert set(makers) == {"maker"}


def test_an_error_of_the_source_reaches_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("frame 17 is all NaN")

    items = Prefetched(source())
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="frame 17"):
        next(items)
    assert next(items, "done") == "done"
    items.close()


def test_close_stops_the_maker_and_runs_the_sources_cleanup_in_its_thread():
    made, cleaned = [], []

    def source():
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            cleaned.append(threading.current_thread().name)

    items = Prefetched(source(), depth=1, name="maker")
    assert next(items) == 0
    time.sleep(0.2)  # the maker fills the queue (1) and holds one more
    items.close()
    assert cleaned == ["maker"]
    assert len(made) <= 3  # taken, queued, in hand: never the whole source
    assert next(items, "done") == "done"


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        Prefetched(iter([]), depth=0)
