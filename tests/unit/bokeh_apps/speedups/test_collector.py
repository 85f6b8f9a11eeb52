"""The worker's collector: full collections freeze their survivors; a requested pass reclaims
cycles that were frozen while alive."""
import gc
import weakref

import pytest

from bokeh_apps.speedups import collector as collector_module
from bokeh_apps.speedups.collector import DeferredCollector


class Node:
    """A cycle of one, with a weak reference to tell when it is reclaimed."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def watched():
    c = DeferredCollector()
    gc.callbacks.append(c.on_gc)
    try:
        yield c
    finally:
        gc.callbacks.remove(c.on_gc)
        gc.unfreeze()


def test_a_full_collection_freezes_its_survivors(watched):
    gc.unfreeze()
    keep = [Node() for _ in range(100)]
    gc.collect()
    assert watched.full_collections == 1
    assert gc.get_freeze_count() >= len(keep)
    assert all(gc.is_tracked(n) for n in keep)


def test_younger_collections_do_not_freeze(watched):
    gc.unfreeze()
    gc.collect(0)
    gc.collect(1)
    assert watched.full_collections == 0
    assert gc.get_freeze_count() == 0


def test_a_requested_pass_reclaims_a_cycle_frozen_while_alive(watched):
    node = Node()
    ref = weakref.ref(node)
    gc.collect()  # node survives and is frozen
    del node
    gc.collect()  # a plain full collection does not look at the frozen heap
    assert ref() is not None
    assert watched.run_pending() == 0.0  # nothing asked for: no pass
    watched.collect()  # what Bokeh calls when it destroys a document
    assert watched.run_pending() > 0.0
    assert ref() is None
    assert watched.collections == 1
    assert gc.get_freeze_count() > 0  # the pass's survivors are frozen again


def test_the_backstop_waits_for_growth_and_time(watched, monkeypatch):
    gc.collect()
    watched._frozen_after_pass = gc.get_freeze_count()
    assert not watched.backstop_due()  # no growth
    watched._frozen_after_pass = gc.get_freeze_count() // 4
    assert not watched.backstop_due()  # grown, but the last pass was just now
    monkeypatch.setattr(collector_module, "BACKSTOP_S", 0.0)
    assert watched.backstop_due()


def test_freezing_survivors_collects_young_garbage_first_and_freezes_the_living(watched):
    gc.unfreeze()
    gc.collect()
    gc.unfreeze()
    frozen_before = gc.get_freeze_count()
    living = Node()
    dead = Node()
    dead_ref, living_ref = weakref.ref(dead), weakref.ref(living)
    del dead  # young cyclic garbage: collected, not frozen
    full_before = watched.full_collections
    watched.freeze_survivors()
    assert dead_ref() is None and living_ref() is not None
    assert gc.get_freeze_count() > frozen_before
    assert watched.full_collections == full_before  # only the young generations were collected
