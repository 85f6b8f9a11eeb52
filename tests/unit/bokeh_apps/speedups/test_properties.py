"""bokeh_apps.speedups.properties: the patched property bookkeeping answers exactly as stock Bokeh.

"Stock" means uninstall()ed, "patched" install()ed; values are compared structurally
(Bokeh's Serializer, with model ids renumbered in order of appearance), because two
constructions of a model differ in their ids and in their default sub-models.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import bokeh
import bokeh.models
import panel as pn
import pytest
from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import UnsetValueError
from bokeh.core.property.singletons import Intrinsic, Undefined
from bokeh.core.serialization import Serializer
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.model import Model
from bokeh.core.properties import Instance, Int, String
from bokeh.models import Button, ColumnDataSource, Div, GlyphRenderer, HoverTool, Plot, Scatter, Title
from bokeh.plotting import figure
from bokeh.themes import built_in_themes

import bokeh_apps.team
import bokeh_apps.teams
from bokeh_apps.slow_query import chart
from bokeh_apps.speedups import properties

# Imported for their side effect: every model class our dashboards use is registered.
REGISTERING = (bokeh.models, pn, bokeh_apps.team, bokeh_apps.teams)

# Captured at import, before any test installs anything: (owner, name) -> its original.
ORIGINALS = {(owner, name): owner.__dict__[name] for owner, name, _ in properties._PATCHES}


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    """No test leaves the patches installed for other test modules."""
    properties.uninstall()
    yield
    properties.uninstall()


@contextmanager
def mode(patched: bool) -> Iterator[None]:
    if patched:
        assert properties.install()
    else:
        properties.uninstall()
    try:
        yield
    finally:
        properties.uninstall()


def normalize(value: Any, ids: dict[str, str] | None = None) -> Any:
    """Serialized form of a property value, model ids renumbered in order of appearance."""
    if value is Undefined:
        return "<Undefined>"
    ids = {} if ids is None else ids
    return _renumber(Serializer(deferred=False).encode(value), ids)


def doc_json(doc: Document) -> Any:
    """``doc.to_json()`` as plain JSON (buffers inline), model ids renumbered in order of appearance."""
    return _renumber(doc.to_json(deferred=False), {})


def _renumber(rep: Any, ids: dict[str, str]) -> Any:
    if isinstance(rep, dict):
        return {k: ids.setdefault(v, f"id{len(ids)}") if k == "id" and isinstance(v, str) else _renumber(v, ids)
                for k, v in rep.items()}
    if isinstance(rep, (list, tuple)):
        return [_renumber(v, ids) for v in rep]
    return rep


def outcome(fn: Callable[[], dict[str, Any]]) -> Any:
    """(keys in order, normalized values), or the exception's type: both must match."""
    try:
        result = fn()
    except Exception as e:
        return ("raised", type(e).__name__)
    ids: dict[str, str] = {}
    return list(result), [normalize(v, ids) for v in result.values()]


QUERIES = [
    dict(include_defaults=False), dict(include_defaults=False, include_undefined=True),
    dict(include_defaults=True), dict(include_defaults=True, include_undefined=True),
]


def model_classes() -> list[type[Model]]:
    return [cls for _, cls in sorted(Model.model_class_reverse_map.items())]


def constructible() -> list[type[Model]]:
    """Every registered model class that constructs with defaults under stock Bokeh."""
    ok = []
    with mode(patched=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in model_classes():
            try:
                cls()
            except Exception:
                continue
            ok.append(cls)
    return ok


@pytest.fixture(scope="module")
def classes() -> list[type[Model]]:
    found = constructible()
    assert len(found) > 300, len(found)
    return found


def test_properties_with_values_matches_stock_for_every_model_class(classes):
    mismatches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in classes:
            with mode(patched=False):
                a, b = cls(), cls()
                same = cls()
            for _round in range(2):  # the first round's side effects must match too
                for kw in QUERIES:
                    with mode(patched=False):
                        expected = outcome(lambda: a.properties_with_values(**kw))
                        same_stock = outcome(lambda: same.properties_with_values(**kw))
                    with mode(patched=True):
                        got = outcome(lambda: b.properties_with_values(**kw))
                        same_patched = outcome(lambda: same.properties_with_values(**kw))
                    if got != expected or same_patched != same_stock:
                        mismatches.append((cls.__qualified_model__, kw))
    assert not mismatches, mismatches[:10]


def test_unselected_unstable_default_is_materialized_as_stock_does():
    # Plot.toolbar defaults to a new Toolbar (unstable); passing Intrinsic skips __init__'s
    # materialization. Stock's first include_defaults=False query then creates the default
    # (and leaves it out), the second includes it: the patch must not skip that side effect.
    runs = {}
    for patched in (False, True):
        with mode(patched=False):
            plot = Plot(toolbar=Intrinsic)
        with mode(patched=patched):
            runs[patched] = [outcome(lambda: plot.properties_with_values(include_defaults=False)) for _ in range(2)]
    assert "toolbar" not in runs[False][0][0] and "toolbar" in runs[False][1][0]
    assert runs[True] == runs[False]


def figure_doc() -> Document:
    doc = Document()
    fig = figure(height=300, title="t", tools="pan,wheel_zoom,box_zoom,reset")
    fig.line([1, 2, 3], [3, 2, 1], legend_label="a")
    fig.scatter([1, 2, 3], [1, 2, 3], legend_label="b", size=8)
    fig.add_tools(HoverTool(tooltips=[("x", "@x")]))
    doc.add_root(column(row(Div(text="x"), Button(label="Cancel")), fig))
    return doc


def slow_query_doc() -> Document:
    doc = Document()
    _, plot = chart(5)
    doc.add_root(column(row(Div(text="x"), Button(label="Cancel")), plot))
    return doc


def panel_doc() -> Document:
    doc = Document()
    fig = figure(height=200)
    fig.line([1, 2], [2, 1])
    # Explicit names: Panel's default ones count up ("Column00142"), differing between builds.
    root = pn.Column(pn.widgets.IntSlider(start=0, end=10, label="n"), pn.pane.Bokeh(fig, name="chart"),
                     name="column").get_root(doc)
    if root not in doc.roots:
        doc.add_root(root)
    return doc


def themed_doc() -> Document:
    doc = figure_doc()
    doc.theme = built_in_themes["dark_minimal"]
    return doc


def unmaterialized_doc() -> Document:
    doc = Document()
    plot = Plot(toolbar=Intrinsic)
    plot.add_glyph(ColumnDataSource(data={"x": [1], "y": [2]}), Scatter(x="x", y="y"))
    doc.add_root(plot)
    return doc


DOCS = [slow_query_doc, figure_doc, panel_doc, themed_doc, unmaterialized_doc]


@pytest.mark.parametrize("make_doc", DOCS, ids=lambda f: f.__name__)
def test_document_to_json_matches_stock(make_doc):
    # The same document, stock then patched then stock: identical JSON (ids included).
    with mode(patched=False):
        doc = make_doc()
        stock = doc.to_json()
    with mode(patched=True):
        assert doc.to_json() == stock
        assert doc.to_json() == stock
    with mode(patched=False):
        assert doc.to_json() == stock

    # Fresh documents, each serialized twice: the second call sees the first's side effects.
    results = {}
    for patched in (False, True):
        with mode(patched=False):
            doc = make_doc()
        with mode(patched=patched):
            results[patched] = [doc_json(doc) for _ in range(2)]
    assert results[True] == results[False]


@pytest.mark.parametrize("make_doc", DOCS, ids=lambda f: f.__name__)
def test_document_built_patched_serializes_as_built_stock(make_doc):
    built = {}
    for patched in (False, True):
        with mode(patched=patched):
            make_doc()  # the second build of each kind runs on filled per-class caches
            doc = make_doc()
        with mode(patched=False):
            built[patched] = doc_json(doc)
    assert built[True] == built[False]


def test_unset_required_property_raises_or_is_undefined_as_stock():
    results = {}
    for patched in (False, True):
        with mode(patched=False):
            renderer = GlyphRenderer(data_source=ColumnDataSource())  # glyph: Required, unset
        with mode(patched=patched):
            with pytest.raises(UnsetValueError):
                renderer.properties_with_values(include_defaults=False)
            with_undefined = renderer.properties_with_values(include_defaults=False, include_undefined=True)
            assert with_undefined["glyph"] is Undefined
            clone = renderer.clone()  # clone() is built on include_undefined=True
            assert clone.properties_with_values(include_defaults=False, include_undefined=True)["glyph"] is Undefined
            results[patched] = list(with_undefined)
    assert results[True] == results[False]


def test_install_is_idempotent_and_uninstall_restores_the_originals():
    def current() -> dict:
        return {(owner, name): owner.__dict__[name] for owner, name in ORIGINALS}

    assert {name for _, name in ORIGINALS} >= {"query_properties_with_values", "__init__", "is_DataModel"}
    assert properties.install() is True
    patched = current()
    assert all(patched[key] is not ORIGINALS[key] for key in ORIGINALS)
    assert properties.install() is True
    assert current() == patched  # not wrapped twice
    properties.uninstall()
    assert all(current()[key] is ORIGINALS[key] for key in ORIGINALS)
    assert not properties.installed()
    properties.uninstall()  # harmless when not installed
    assert all(current()[key] is ORIGINALS[key] for key in ORIGINALS)


def test_install_refuses_other_bokeh_versions(monkeypatch, caplog):
    monkeypatch.setattr(bokeh, "__version__", "3.10.0")
    with caplog.at_level(logging.WARNING, logger=properties.__name__):
        assert properties.install() is False
    assert "3.10.0" in caplog.text
    assert all(owner.__dict__[name] is original for (owner, name), original in ORIGINALS.items())


def test_construction_matches_stock_for_every_model_class(classes):
    def state(obj: HasProps) -> Any:
        # Bookkeeping as construction left it, then every value, read the stock way.
        bookkeeping = [list(obj._property_values), list(obj._unstable_default_values),
                       list(obj._unstable_themed_values)]
        with mode(patched=False):
            values = outcome(lambda: obj.properties_with_values(include_defaults=True, include_undefined=True))
        return bookkeeping, values

    mismatches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mode(patched=False):
            stock = [cls() for cls in classes]
        with mode(patched=True):
            for cls in classes:
                cls()  # fill the per-class caches: the instances compared below use them
            patched = [cls() for cls in classes]
        for cls, a, b in zip(classes, stock, patched):
            if state(a) != state(b):
                mismatches.append(cls.__qualified_model__)
    assert not mismatches, mismatches[:10]


def test_per_class_answers_match_stock_for_every_model_class(classes):
    mismatches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mode(patched=False):
            instances = [cls() for cls in classes]
            theme = {"name": "themed"}
            instances[0].apply_theme(theme)
            expected = [(cls._overridden_defaults(), obj.themed_values(),
                         [cls.lookup(name).has_unstable_default(obj) for name in cls.properties(_with_props=True)])
                        for cls, obj in zip(classes, instances)]
        with mode(patched=True):
            for _ in range(2):  # cold, then cached
                got = [(cls._overridden_defaults(), obj.themed_values(),
                        [cls.lookup(name).has_unstable_default(obj) for name in cls.properties(_with_props=True)])
                       for cls, obj in zip(classes, instances)]
                mismatches += [cls.__qualified_model__ for cls, e, g in zip(classes, expected, got) if e != g]
    assert expected[0][1] is theme
    assert not mismatches, mismatches[:10]


def test_property_type_names_match_stock_for_every_model_class(classes):
    props = [cls.lookup(name).property for cls in classes for name in cls.properties(_with_props=True)]
    with mode(patched=False):
        expected = [str(p) for p in props]
    with mode(patched=True):
        got = [[str(p) for p in props] for _ in range(2)]  # cold, then cached
    assert any(name.startswith("Dict(") for name in expected)
    assert got[0] == expected and got[1] == expected


def test_data_specs_serialize_as_stock_for_every_model_class(classes):
    from bokeh.core.property.dataspec import DataSpec

    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in classes:
            obj = cls()
            for name in cls.properties(_with_props=True):
                prop = cls.lookup(name).property
                if isinstance(prop, DataSpec):
                    own = cls.lookup(name).class_default(cls)  # Undefined for a required spec
                    for val in (own, "a_field", 1.5, {"value": 2}, {"field": "f"}, None, "red"):
                        cases.append((prop, obj, name, val))

    def run_all():
        out = []
        for prop, obj, name, val in cases:
            try:
                out.append(repr(prop.to_serializable(obj, name, val)))
            except Exception as exc:  # the same error either way
                out.append(f"raised {type(exc).__name__}: {exc}")
        return out
    with mode(patched=False):
        expected = run_all()
    with mode(patched=True):
        got = [run_all() for _ in range(2)]  # cold, then cached
    assert len(cases) > 1000 and any("Field(" in e for e in expected) and any("Value(" in e for e in expected)
    assert got[0] == expected and got[1] == expected


def test_data_model_answers_match_stock_for_every_model_class():
    import bokeh.document.document as bokeh_document

    classes = list(Model.model_class_reverse_map.values())
    with mode(patched=False):
        expected = [bool(bokeh_document.is_DataModel(cls)) for cls in classes]
    with mode(patched=True):
        got = [[bool(bokeh_document.is_DataModel(cls)) for cls in classes] for _ in range(2)]
    assert 0 < sum(expected) < len(expected)  # Panel's DataModels, and the rest
    assert got[0] == expected and got[1] == expected


class _Converted(Model):
    """A default that does not validate as it is: stock converts it through `accepts`."""

    __implementation__ = None
    label = Instance(Title, default="hello").accepts(String, lambda text: Title(text=text))
    size = Int(3)


def test_a_default_converted_through_the_alternatives_is_converted_at_every_read():
    results = {}
    for patched in (False, True):
        with mode(patched=patched):
            made = [_Converted() for _ in range(3)]
            results[patched] = [(type(m.label).__name__, m.label.text, m.size) for m in made]
            assert len({id(m.label) for m in made}) == 3  # a fresh Title each time
    assert results[True] == results[False] == [("Title", "hello", 3)] * 3
