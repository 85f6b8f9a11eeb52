"""Speed up Bokeh's property bookkeeping, which dominates the per-session CPU of our servers.

Every new session builds a document (hundreds of ``HasProps.__init__`` calls, each asking
every property whether its default is "unstable", then computing and validating defaults)
and serializes it for PULL-DOC (``Document.to_json()`` -> ``HasProps.to_serializable`` ->
``properties_with_values(include_defaults=False)``, which computes, validates and throws
away the default of every property that was never set). CPU ms per document, stock ->
patched, best of 12 alternating rounds (``.venv/bin/python -m benchmarks.properties``,
which writes build/bench/properties.json; ``--ablation`` measures each patch's share)::

    slow-query chart + status row       build  9.1 ->  3.2   to_json  9.0 -> 0.9
    figure with legend/hover + layout   build 25.2 -> 10.5   to_json 17.3 -> 2.0
    Panel Column(IntSlider, Bokeh pane) build 21.2 -> 11.2   to_json 11.7 -> 1.2

What is patched (``HasProps`` of bokeh.core.has_props unless said otherwise); the first
patch is the to_json saving, each of the others saves 5-30% of the patched build time on
top of the rest (``--ablation``):

* ``query_properties_with_values``: with ``include_defaults=False``, do not call
  ``get_value()`` for an unselected property when stock would only discard its value:
  plain descriptor, stable default that is not ``Undefined`` (see ``_skippable``). Every
  other case, including an unset required property (``UnsetValueError`` or ``Undefined``)
  and an unstable default that stock materializes, runs stock's own code, in stock's order.
* ``__init__``: the properties with an unstable default are listed once per class instead
  of asking every property of every new instance.
* ``_overridden_defaults``: the merge of ``__overridden_defaults__`` along the MRO is done
  once per class instead of at every default read.
* ``PropertyDescriptor.has_unstable_default``: cached per (descriptor, class of the
  instance); ``_get_default()`` asks it at every default read.
* ``themed_values``: reads the instance dict instead of a ``getattr()`` whose miss goes
  through ``HasProps.__getattr__`` and an ``AttributeError`` (at every default read).
* ``ParameterizedProperty.__str__``: the property's type name, which ``Dict.validate``
  formats eagerly for a possible error message, is computed once per property object.
* ``DataSpec.to_serializable``: the property it validates a value against is built once
  per spec, not at every serialization of every glyph property.
* ``is_DataModel`` as bokeh.document.document calls it (to_json() scans every model class
  for DataModels): answered once per class.

Why per-class caches are safe without invalidation: ``MetaHasProps.__new__`` sets a class's
``__properties__`` and ``__overridden_defaults__`` from its body, and neither Bokeh nor
Panel reassigns or mutates them afterwards (Panel sets a property's default before it
creates the class); Bokeh's own ``lru_cache`` on ``HasProps.properties()`` and
``descriptors()`` relies on the same. Caches are keyed by the class object, so classes
created later get their own entries. Filling a cache entry twice from two threads
stores the same answer.

* ``Property.themed_default``: a class's default (its own or an ``__overridden_defaults__``
  one) is validated the first time it is read, not at every read. ``prepare_value()`` of a
  valid value on a class is ``wrap(transform(value))``; a default that does not validate as
  it is (stock converts it through the property's alternatives), a theme's value and a
  property class with its own ``prepare_value`` take stock's path every time. It assumes a
  default factory returns values of one validity, which the tests check for every model
  class (slow-query build 3.9 -> 3.2 ms).

Version-guarded: ``install()`` patches only bokeh 3.9.x, the version the equivalence
tests (tests/unit/test_properties.py) ran on; on any other version it logs a warning and
returns False.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import bokeh
import bokeh.document.document as bokeh_document
from bokeh.core.has_props import HasProps
from bokeh.core.property.bases import ParameterizedProperty, Property
from bokeh.core.property.dataspec import DataSpec
from bokeh.core.property.descriptors import (
    ColumnDataPropertyDescriptor,
    DataSpecPropertyDescriptor,
    PropertyDescriptor,
    UnitsSpecPropertyDescriptor,
    UnsetValueError,
)
from bokeh.core.property.nothing import Nothing
from bokeh.core.property.primitive import String
from bokeh.core.property.singletons import Intrinsic, Undefined
from bokeh.core.property.vectorization import Field, Value
from bokeh.core.property.wrappers import PropertyValueContainer

log = logging.getLogger(__name__)
_PREPARE_VALUE = Property.prepare_value

SUPPORTED_VERSION_PREFIX = "3.9."

# (owner, attribute) -> the raw entry of owner.__dict__ (a class, or a module) that install() replaced.
_originals: dict[tuple[Any, str], Any] = {}

# Per-class caches, keyed by the class itself (not its name), so that classes created
# after install() get their own entries. They hold classes alive, as Bokeh's lru_cache on
# HasProps.properties() already does (Panel creates a DataModel class once per Panel class).
_query_plans: dict[type, tuple[tuple[str, Any, bool], ...]] = {}
_unstable_props: dict[type, tuple[tuple[str, Any], ...]] = {}
_overrides: dict[type, dict[str, Any]] = {}
_unstable_default: dict[tuple[Any, type], bool] = {}
_themed_on_class: dict[type, bool] = {}
_data_model: dict[type, bool] = {}
# (id(property), class, no_eval) -> (property, whether its class default validates as it is).
# Keyed by id: Property defines __eq__ and so is unhashable; the entry holds the property.
_valid_default: dict[tuple[int, type, bool], tuple[Any, bool]] = {}

# Descriptor types whose get_value() for an unset, unthemed property with a stable
# default only computes class_default() (plus a pure to_serializable() for data specs).
# Exact types: a subclass could override get_value().
_PLAIN_DESCRIPTORS = frozenset({
    PropertyDescriptor, ColumnDataPropertyDescriptor, DataSpecPropertyDescriptor, UnitsSpecPropertyDescriptor,
})


def _stock(owner: Any, name: str) -> Any:
    """The original function, unwrapped from its classmethod if it is one."""
    raw = _originals[(owner, name)] if (owner, name) in _originals else owner.__dict__[name]
    return raw.__func__ if isinstance(raw, classmethod) else raw


def _skippable(cls: type[HasProps], descriptor: Any) -> bool:
    """Whether stock's ``get_value()`` of this property, on an instance of ``cls`` where it
    is unselected (not set, not themed, no materialized unstable default), succeeds
    without side effects, so that stock would call it only to discard the value.

    For those descriptors ``get_value()`` then goes ``_get_default()`` ->
    ``instance_default()``, i.e. ``class_default(cls)`` (no theme applies to it), and writes
    to ``_unstable_default_values`` only if ``has_unstable_default()``. A stable default is
    the same for every instance of the class, so it is computed once here: ``Undefined``
    means stock raises ``UnsetValueError`` (or reports ``Undefined``), and an exception
    (an invalid default) means stock raises it, so neither is skippable."""
    if type(descriptor) not in _PLAIN_DESCRIPTORS or descriptor.has_unstable_default(cls):
        return False
    try:
        return descriptor.class_default(cls) is not Undefined
    except Exception:  # stock would raise it from get_value(): keep calling get_value()
        return False


def _query_plan(cls: type[HasProps]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, descriptor, skippable) for every property of ``cls``, in stock's order."""
    plan = _query_plans.get(cls)
    if plan is None:
        plan = tuple((key, desc, _skippable(cls, desc))
                     for key in cls.properties(_with_props=True) for desc in (cls.lookup(key),))
        _query_plans[cls] = plan
    return plan


def _query_properties_with_values(self: HasProps, query: Callable[[Any], bool], *,
                                  include_defaults: bool = True, include_undefined: bool = False) -> dict[str, Any]:
    """Stock ``HasProps.query_properties_with_values`` (bokeh 3.9.2) with one added line,
    marked below; include_defaults=True, which selects every property, is stock's."""
    if include_defaults or "__overridden_defaults__" in self.__dict__:
        # (an instance-level __overridden_defaults__ would defeat the per-class analysis)
        return _stock(HasProps, "query_properties_with_values")(
            self, query, include_defaults=include_defaults, include_undefined=include_undefined)

    themed_keys: set[str] = set()
    result: dict[str, Any] = {}
    # Snapshot, as stock does: a get_value() below may materialize an unstable default,
    # which must not make that property selected in this call.
    selected_keys = set(self._property_values.keys()) | set(self._unstable_default_values.keys())
    themed_values = self.themed_values()
    if themed_values is not None:
        themed_keys = set(themed_values.keys())
        selected_keys |= themed_keys

    for key, descriptor, skippable in _query_plan(type(self)):
        if not query(descriptor):
            continue

        # The patch: stock would call get_value() and then `continue` (unselected key).
        # Unselected properties with an unstable default still go through get_value(), so
        # its side effect (materializing the default into _unstable_default_values, which
        # makes the property selected, and serialized, from the next call on) is kept:
        # a second to_json() of the same document is the same as stock's.
        if skippable and key not in selected_keys:
            continue

        try:
            value = descriptor.get_value(self)
        except UnsetValueError:
            if include_undefined:
                value = Undefined
            else:
                raise
        else:
            if key not in selected_keys:
                continue
            if key not in themed_keys:
                if isinstance(value, PropertyValueContainer) and key in self._unstable_default_values:
                    continue

        result[key] = value

    return result


def _unstable_properties(cls: type[HasProps]) -> tuple[tuple[str, Any], ...]:
    """(name, descriptor) of the properties of ``cls`` whose default is unstable, in order."""
    props = _unstable_props.get(cls)
    if props is None:
        # has_unstable_default() reads the property and `obj.__overridden_defaults__`, which
        # for an instance without its own attribute of that name is the class's.
        props = tuple((name, desc) for name in cls.properties(_with_props=True)
                      if (desc := cls.lookup(name)).has_unstable_default(cls))
        _unstable_props[cls] = props
    return props


def _init(self: HasProps, **properties: Any) -> None:
    """Stock ``HasProps.__init__`` with the unstable-default scan cached per class."""
    super(HasProps, self).__init__()
    self._property_values = {}
    self._unstable_default_values = {}
    self._unstable_themed_values = {}

    for name, value in properties.items():
        if value is Undefined or value is Intrinsic:
            continue
        setattr(self, name, value)

    if "__overridden_defaults__" in self.__dict__:
        # Set on the instance (a private kwarg): per-class answers do not apply.
        for name in self.properties(_with_props=True):
            if name not in properties and (desc := self.lookup(name)).has_unstable_default(self):
                desc._get(self)
    else:
        for name, desc in _unstable_properties(type(self)):
            if name not in properties:
                desc._get(self)  # this fills-in `_unstable_*_values`

    self._initialized = True


def _overridden_defaults(cls: type[HasProps]) -> dict[str, Any]:
    """Stock's MRO merge of ``__overridden_defaults__``, once per class. Its only caller,
    ``Property.themed_default``, reads the dict; a copy keeps stock's fresh-dict contract
    for anyone else, and costs far less than the merge."""
    merged = _overrides.get(cls)
    if merged is None:
        merged = _overrides[cls] = _stock(HasProps, "_overridden_defaults")(cls)
    return dict(merged)


def _has_unstable_default(self: PropertyDescriptor[Any], obj: Any) -> bool:
    """Stock's answer, cached per (descriptor, type(obj)): it reads only the property's
    defaults and ``obj.__overridden_defaults__``, the class's unless the instance has its own."""
    if isinstance(obj, type) or "__overridden_defaults__" in getattr(obj, "__dict__", ()):
        return _stock(PropertyDescriptor, "has_unstable_default")(self, obj)
    key = (self, type(obj))
    answer = _unstable_default.get(key)
    if answer is None:
        answer = _unstable_default[key] = _stock(PropertyDescriptor, "has_unstable_default")(self, obj)
    return answer


def _themed_values(self: HasProps) -> dict[str, Any] | None:
    """Stock's ``getattr(self, '__themed_values__', None)`` without the failed lookup's cost:
    when the attribute is missing (almost always; it is asked at every default read),
    ``HasProps.__getattr__`` runs and raises ``AttributeError``. ``apply_theme()`` stores it
    on the instance, so unless a class in the MRO defines it, the instance dict decides."""
    cls = type(self)
    on_class = _themed_on_class.get(cls)
    if on_class is None:
        on_class = _themed_on_class[cls] = any("__themed_values__" in vars(c) for c in cls.__mro__)
    if on_class:
        return _stock(HasProps, "themed_values")(self)
    return self.__dict__.get("__themed_values__")


def _parameterized_str(self: ParameterizedProperty[Any]) -> str:
    """Stock's ``Dict(String, Nullable(String))``-style name, once per property object.
    ``Dict.validate`` formats it for its error message before it knows there is an error,
    at every validation of every dict default: ~5% of building a slow-query or figure
    document (``benchmarks.properties --ablation``). A property's type parameters are set in its constructor and never
    reassigned (``replace()`` and ``__call__`` make new properties), so the name is fixed."""
    name = self.__dict__.get("_patched_str")
    if name is None:
        name = self.__dict__["_patched_str"] = _stock(ParameterizedProperty, "__str__")(self)
    return name


def _dataspec_to_serializable(self: DataSpec, obj: HasProps, name: str, val: Any) -> Any:
    """Stock ``DataSpec.to_serializable`` with its "is this a plain value?" property built
    once per spec instead of at every call: ``value_type.replace(String, Nothing())``
    constructs a new property tree each time, a fifth of PULL-DOC's serialization in a
    py-spy profile of make bench load (b). The tree depends only on the spec's type
    parameters, which are fixed, and validating against it has no side effects."""
    check = self.__dict__.get("_patched_value_check")
    if check is None:
        check = self.__dict__["_patched_value_check"] = self.value_type.replace(String, Nothing())
    try:
        check.validate(val, False)
        return Value(val)
    except ValueError:
        pass
    if isinstance(val, str):
        return Field(val)
    return val


def _themed_default(self: Property, cls: type, name: str, theme_overrides: dict[str, Any] | None, *,
                    no_eval: bool = False) -> Any:
    """Stock ``Property.themed_default``, validating a class's default once instead of at every
    read: ``prepare_value()`` validated each fresh copy of the same default (86% of a
    slow-query build's ``prepare_value`` calls). A default that does not validate as it is
    (stock converts it through the property's alternatives), a theme's value, and a
    property class with its own ``prepare_value`` take stock's path every time."""
    if (theme_overrides is not None and name in theme_overrides) or type(self).prepare_value is not _PREPARE_VALUE:
        return _stock(Property, "themed_default")(self, cls, name, theme_overrides, no_eval=no_eval)
    overrides = cls._overridden_defaults()
    default = (self._copy_default(overrides[name], no_eval=no_eval) if name in overrides
               else self._raw_default(no_eval=no_eval))
    if default is Intrinsic or default is Undefined:
        return self.prepare_value(cls, name, default)
    key = (id(self), cls, no_eval)
    known = _valid_default.get(key)
    if known is None:
        known = _valid_default[key] = (self, self.is_valid(default))
    if known[1]:
        return self.wrap(self.transform(default))  # prepare_value() of a valid value, on a class
    return self.prepare_value(cls, name, default)


def _is_data_model(cls: type) -> bool:
    """Stock ``is_DataModel``, once per class. ``Document.to_json()`` asks it of every
    registered model class (529 with Panel loaded) at every PULL-DOC: 0.6 ms of the 1.7 ms
    a slow-query document's to_json() takes. ``__data_model__`` is set in the class body."""
    answer = _data_model.get(cls)
    if answer is None:
        answer = _data_model[cls] = _stock(bokeh_document, "is_DataModel")(cls)
    return answer


_PATCHES: tuple[tuple[Any, str, Any], ...] = (
    (HasProps, "query_properties_with_values", _query_properties_with_values),
    (HasProps, "__init__", _init),
    (HasProps, "_overridden_defaults", classmethod(_overridden_defaults)),
    (PropertyDescriptor, "has_unstable_default", _has_unstable_default),
    (HasProps, "themed_values", _themed_values),
    (ParameterizedProperty, "__str__", _parameterized_str),
    (DataSpec, "to_serializable", _dataspec_to_serializable),
    (bokeh_document, "is_DataModel", _is_data_model),
    (Property, "themed_default", _themed_default),
)


def _clear_caches() -> None:
    for cache in (_query_plans, _unstable_props, _overrides, _unstable_default, _themed_on_class, _data_model,
                  _valid_default):
        cache.clear()


def install() -> bool:
    """Apply the patches (idempotent). False, with a warning, on an untested Bokeh version."""
    if not bokeh.__version__.startswith(SUPPORTED_VERSION_PREFIX):
        log.warning("bokeh %s is not %sx: property speedups not installed (equivalence untested)",
                    bokeh.__version__, SUPPORTED_VERSION_PREFIX)
        return False
    if _originals:
        return True
    _clear_caches()
    for owner, name, _ in _PATCHES:
        _originals[(owner, name)] = owner.__dict__[name]
    for owner, name, patched in _PATCHES:
        setattr(owner, name, patched)
    return True


def uninstall() -> None:
    """Restore Bokeh's original functions (for tests and benchmarks)."""
    for (owner, name), original in _originals.items():
        setattr(owner, name, original)
    _originals.clear()
    _clear_caches()


def installed() -> bool:
    """Whether the patches are in place."""
    return bool(_originals)
