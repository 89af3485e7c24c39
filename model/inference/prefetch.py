"""An iterator whose items are made ahead, in a thread of their own.

The engine's network thread should do nothing but call the network: cutting the next batch out of
the chunks read ahead (a copy of about 100 MB for a GPU batch of 256 patches that spans two
chunks) then happens while the network runs the current one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"
#: How often (seconds) a producer blocked on a full queue checks whether it should stop.
_POLL_S = 0.05


class Prefetched(Generic[T]):
    """The items of ``source``, up to ``depth`` of them made ahead by a thread.

    Items come out in order; an exception raised by ``source`` is raised by :meth:`__next__` in
    the consumer's thread, after the items made before it. :meth:`close` (also on leaving a
    ``with`` block) stops the thread after the item it is making, closes ``source`` in that
    thread (a generator's ``finally`` runs there) and waits for it. Besides the ``depth`` items
    queued, the thread holds the one it is making.
    """

    def __init__(self, source: Iterator[T], depth: int = 1, name: str = "caimx-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name,
                                        daemon=True)
        self._thread.start()

    def _produce(self, source: Iterator[T]) -> None:
        items = iter(source)
        try:
            while not self._stop.is_set():  # checked before making the next item
                try:
                    item = next(items)
                except StopIteration:
                    self._offer(_END, None)
                    return
                if not self._offer(_ITEM, item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._offer(_ERROR, exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _offer(self, kind: str, value: object) -> bool:
        """Queue one entry unless told to stop first; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._finished = True
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        """Stop the thread and wait for it (items not taken are dropped)."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_POLL_S)
        self._thread.join()

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
