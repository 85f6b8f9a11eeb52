"""bokeh_apps.speedups.model_defs: a document of Bokeh's own models is sent without the model
definitions, and otherwise exactly as stock; every other document exactly as stock."""
from __future__ import annotations

from typing import Iterator

import pytest
from bokeh.core.serialization import Serialized
from bokeh.document import Document
from bokeh.model import DataModel
from bokeh.core.properties import Int

from bokeh_apps.speedups import model_defs
from tests.unit.bokeh_apps.speedups.test_properties import DOCS, figure_doc, panel_doc, slow_query_doc


class Counter(DataModel):
    """A Python-only model: BokehJS builds it from its definition in ``defs``."""

    clicks = Int(0)


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    model_defs.uninstall()
    yield
    model_defs.uninstall()


def both(doc: Document, *, deferred: bool) -> tuple[dict, dict]:
    """(stock, patched) to_json of the same document, as plain dicts."""
    def plain(out):
        return dict(out.content if isinstance(out, Serialized) else out)
    stock = plain(doc.to_json(deferred=deferred))
    assert model_defs.install()
    try:
        return stock, plain(doc.to_json(deferred=deferred))
    finally:
        model_defs.uninstall()


@pytest.mark.parametrize("deferred", [True, False])
@pytest.mark.parametrize("make_doc", [slow_query_doc, figure_doc], ids=lambda f: f.__name__)
def test_a_bokeh_document_is_sent_as_stock_without_the_definitions(make_doc, deferred):
    stock, patched = both(make_doc(), deferred=deferred)
    assert stock["defs"], "stock sends definitions (Panel is imported): nothing would be saved"
    assert patched == {k: v for k, v in stock.items() if k != "defs"}


@pytest.mark.parametrize("deferred", [True, False])
def test_a_panel_document_and_a_document_holding_a_data_model_are_sent_as_stock(deferred):
    with_data_model = slow_query_doc()
    with_data_model.add_root(Counter())
    for doc in (panel_doc(), with_data_model):
        assert model_defs.needs_defs(doc)
        stock, patched = both(doc, deferred=deferred)
        assert patched == stock and any(d["name"].endswith("Counter") for d in patched["defs"])


def test_every_test_document_of_the_property_speedups_still_serializes():
    assert model_defs.install()
    for make_doc in DOCS:
        content = make_doc().to_json().content
        assert content["roots"] and ("defs" in content) == model_defs.needs_defs(make_doc())


def test_install_is_idempotent_and_uninstall_restores_stock():
    stock = Document.__dict__["to_json"]
    assert model_defs.install() and model_defs.install()
    assert Document.__dict__["to_json"] is model_defs.to_json
    model_defs.uninstall()
    assert Document.__dict__["to_json"] is stock


def test_install_refuses_other_bokeh_versions(monkeypatch, caplog):
    monkeypatch.setattr(model_defs.bokeh, "__version__", "4.0.0")
    assert model_defs.install() is False
    assert "not 3.9.x" in caplog.text
    assert "to_json" not in model_defs._stock
