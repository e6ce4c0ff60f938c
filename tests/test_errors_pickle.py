"""Every error class segpipe defines pickles round-trip: type, message and attributes.

Errors cross process boundaries (Ray tasks and actors, Prefect's task results), which
pickle them. An error whose ``__init__`` does not take its own ``args`` back (such as
``InputError(path, reason)``, whose ``args`` are one formatted message) needs a
``__reduce__``; without one, Ray hands the driver its unserialisable-exception wrapper
instead of the error. The classes are found by walking every module of segcore,
pipeline and flows, so a new error class is covered without being listed here.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import SegpipeError

PACKAGES = ("segcore", "pipeline", "flows")
KNOWN = {"SegpipeError", "ConfigError", "TileSizeError", "ModelError", "InputError",
         "StorageError", "MissingObjectError", "NoWorkerError", "InjectedFault"}


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def error_classes() -> list[type[BaseException]]:
    """Exception classes defined in segpipe's packages (and every SegpipeError subclass)."""
    classes: set[type] = set()
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            try:
                module = importlib.import_module(info.name)
            except ModuleNotFoundError as exc:  # an optional third-party dependency
                if exc.name and exc.name.split(".")[0] in PACKAGES:
                    raise
                continue
            classes |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                        if issubclass(obj, BaseException) and obj.__module__ == info.name}
    classes |= _subclasses(SegpipeError) | {SegpipeError}
    return sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def make_error(cls: type[BaseException], text: str = "x") -> BaseException:
    """An instance built from its signature: one text argument per required parameter."""
    try:
        signature = inspect.signature(cls)
    except ValueError:  # the builtin __init__: any arguments, kept as args
        return cls(f"{cls.__name__}: {text}")
    params = [p for p in signature.parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return cls(*(f"{p.name}={text}" for p in params))


def same_error(back: BaseException, original: BaseException) -> None:
    assert type(back) is type(original)
    assert str(back) == str(original)
    assert back.args == original.args
    assert vars(back) == vars(original)


CLASSES = error_classes()


def test_the_walk_finds_every_known_error_class():
    assert KNOWN <= {c.__name__ for c in CLASSES}, sorted(c.__name__ for c in CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=40))
def test_error_pickles_round_trip(cls, text):
    original = make_error(cls, text)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        same_error(pickle.loads(pickle.dumps(original, protocol=protocol)), original)
