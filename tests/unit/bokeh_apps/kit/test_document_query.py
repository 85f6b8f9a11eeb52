"""A document's callbacks from the database thread reach it on the Bokeh loop's thread
(bokeh_apps.kit.document_query.next_tick): Bokeh's session constructor is not safe against
a callback added from another thread."""
from __future__ import annotations

import asyncio
import threading

from bokeh.document import Document

from bokeh_apps.kit.document_query import next_tick


class RecordingDocument(Document):
    """A real Document that notes which thread adds each next-tick callback."""

    def __init__(self) -> None:
        super().__init__()
        self.added_on: list[int] = []

    def add_next_tick_callback(self, callback):
        self.added_on.append(threading.get_ident())
        return super().add_next_tick_callback(callback)


def test_a_callback_from_another_thread_is_added_on_the_loops_thread():
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:
        doc = RecordingDocument()
        foreign = threading.Thread(target=next_tick, args=(doc, lambda: None, loop, loop_thread.ident))
        foreign.start()
        foreign.join()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # the hop has run
        assert doc.added_on == [loop_thread.ident]
        assert len(doc.session_callbacks) == 1

        # On the loop's own thread (the document's callbacks, Bokeh's) it goes straight in.
        loop.call_soon_threadsafe(next_tick, doc, lambda: None, loop, loop_thread.ident)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
        assert doc.added_on == [loop_thread.ident] * 2
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        loop.close()


def test_a_closed_loop_drops_the_callback_quietly():
    loop = asyncio.new_event_loop()
    loop.close()
    doc = RecordingDocument()
    next_tick(doc, lambda: None, loop, threading.get_ident() + 1)  # "another thread's" loop, closed
    assert doc.added_on == []


def test_without_a_loop_the_callback_goes_straight_in():
    doc = RecordingDocument()
    next_tick(doc, lambda: None, None, 0)
    assert doc.added_on == [threading.get_ident()]
