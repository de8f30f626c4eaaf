"""Quick constructors for the frozen, slotted records built on every command.

A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__`` (its own
``__setattr__`` refuses), about 0.1 us a field: a 16-field event costs 1.7 us to build, a command
builds some ten records, and together they were a third of a command on the in-memory store.
:func:`quick_constructor` gives a function with the record's own signature that stores the fields
into a plain twin class with the same slots (plain attribute stores, specialised by the
interpreter), then gives the instance the record's class. The result is the record itself: same
type, equal, hashed, printed, pickled and frozen as one built by the class (``tests/test_quick.py``
holds them to it). Records with a ``__post_init__`` keep their class's constructor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["quick_constructor"]

P = ParamSpec("P")
T = TypeVar("T")

_MISSING = dataclasses.MISSING


def quick_constructor(cls: Callable[P, T]) -> Callable[P, T]:
    """A function taking the arguments ``cls`` takes (same names, order, keyword-only fields and
    defaults) that returns the same record, faster; ``cls`` itself where that cannot be done (a
    ``__post_init__``, no slots, or a Python that refuses to switch an instance's class)."""
    record: Any = cls
    if (not isinstance(record, type) or not hasattr(record, "__dataclass_fields__") or hasattr(record, "__post_init__")
            or "__slots__" not in vars(record)):
        return cls
    fields = dataclasses.fields(record)
    names = tuple(f.name for f in fields)
    if tuple(vars(record)["__slots__"]) != names or record.__bases__ != (object,):
        return cls
    twin = type(f"_{record.__name__}Twin", (), {"__slots__": names})
    namespace: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": record, "_MISSING": _MISSING}
    params: list[str] = []
    keyword_only: list[str] = []
    body: list[str] = []
    for f in fields:
        param = f.name
        if f.default is not _MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param += f"=_default_{f.name}"
        elif f.default_factory is not _MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param += "=_MISSING"
            body.append(f"    if {f.name} is _MISSING: {f.name} = _factory_{f.name}()\n")
        (keyword_only if f.kw_only else params).append(param)
    signature = ", ".join(params + (["*", *keyword_only] if keyword_only else []))
    stores = "".join(f"    self.{name} = {name}\n" for name in names)
    source = (f"def make_{record.__name__}({signature}):\n" + "".join(body) + "    self = _new(_twin)\n" + stores
              + "    self.__class__ = _cls\n    return self\n")
    exec(source, namespace)  # the source is built above from the record's field names only
    make: Callable[P, T] = namespace[f"make_{record.__name__}"]
    make.__doc__ = f"Build a {record.__name__} (see broadcast_lifecycle._quick)."
    try:  # a Python that keeps instances in their class (not CPython) gets the class itself
        probe: Any = object.__new__(twin)
        probe.__class__ = record
    except TypeError:
        return cls
    return make
