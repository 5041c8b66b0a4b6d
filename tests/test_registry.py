"""The generic Registry and the four families built on it (models, datasets, sweep kinds,
search methods)."""

from __future__ import annotations

import pytest

from conflicting_bundles.registry import Registry


def _fn():
    return 1


def _other():
    return 2


# ------------------------------------------------------------------------------ generic class
def test_add_get_names_and_order():
    reg: Registry[int] = Registry("widget")
    assert reg.add("b", 2) == 2 and reg.add("a", 1) == 1
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"]
    assert reg.items() == [("b", 2), ("a", 1)]
    assert reg.get("a") == 1 and reg["b"] == 2
    assert "a" in reg and "c" not in reg and ["unhashable"] not in reg
    assert len(reg) == 2 and "widget" in repr(reg)


def test_a_taken_name_is_refused_unless_replace():
    reg: Registry = Registry("widget")
    reg.add("f", _fn)
    reg.add("f", _fn)  # the same object again is a no-op
    with pytest.raises(ValueError, match=r"widget 'f' is already registered \(by .*_fn\).*replace"):
        reg.add("f", _other)
    assert reg.get("f") is _fn
    assert reg.add("f", _other, replace=True) is _other and reg.get("f") is _other
    with pytest.raises(ValueError, match="non-empty name"):
        reg.add("", _fn)


def test_unknown_name_lists_the_names():
    reg: Registry[int] = Registry("widget")
    with pytest.raises(ValueError, match=r"registered widgets: \(none\)"):
        reg.get("x")
    reg.add("zeta", 1)
    reg.add("alpha", 2)
    with pytest.raises(
        ValueError, match=r"^unknown widget 'x'; registered widgets: zeta, alpha\.$"
    ):
        reg.get("x")
    with pytest.raises(ValueError, match="unknown widget"):
        reg[["unhashable"]]
    srt: Registry[int] = Registry(
        "thing", "stuff", unknown="no {what} {name!r} in {names}", sort=True
    )
    srt.add("zeta", 1)
    srt.add("alpha", 2)
    assert str(srt.unknown_error("x")) == "no thing 'x' in alpha, zeta"
    with pytest.raises(ValueError, match=r"^no thing 'x' in alpha, zeta$"):
        srt.get("x")


def test_dict_style_access_for_tests(monkeypatch):
    reg: Registry = Registry("widget")
    reg.add("f", _fn)
    assert reg.get("g", None) is None and reg.get("f", None) is _fn
    with monkeypatch.context() as mp:
        mp.setitem(reg, "f", _other)  # replaces without replace=True
        mp.setitem(reg, "g", _fn)
        assert reg.get("f") is _other and reg.names() == ["f", "g"]
    assert reg.get("f") is _fn and reg.names() == ["f"]  # undone: replaced back, added removed
    del reg["f"]
    assert len(reg) == 0
    with pytest.raises(KeyError):
        del reg["f"]


def test_register_decorator():
    reg: Registry = Registry("widget")

    @reg.register()
    def square(x):
        return x * x

    @reg.register("cube")
    def _cube(x):
        return x**3

    assert reg.names() == ["square", "cube"] and reg.get("cube")(2) == 8
    assert square(3) == 9  # the decorator returns the object itself
    with pytest.raises(ValueError, match="already registered"):
        reg.register("square")(_other)
    assert reg.register("square", replace=True)(_other) is _other and reg.get("square") is _other
    with pytest.raises(TypeError, match="no __name__"):
        reg.register()(3)


# ---------------------------------------------------------------------------- the families
def _models():
    from conflicting_bundles.models import create_model
    from conflicting_bundles.models.registry import MODELS

    return MODELS, create_model


def _datasets():
    from conflicting_bundles.data import dataset_info
    from conflicting_bundles.data.registry import SOURCES

    return SOURCES, dataset_info


def _kinds():
    from conflicting_bundles.sweep.registry import KINDS, get_kind

    return KINDS, get_kind


def _scorers():
    from conflicting_bundles.prune.scorers import SCORER_REGISTRY, get_scorer

    return SCORER_REGISTRY, get_scorer


def _searches():
    from conflicting_bundles.search.registry import SEARCHES, create_search

    return SEARCHES, create_search


@pytest.mark.parametrize(
    "family, what, builtins",
    [
        (_models, "model", {"fnn", "plain", "resnet"}),
        (_datasets, "dataset", {"mnist", "fashion-mnist", "cifar10", "synthetic"}),
        (_kinds, "sweep kind", {"train", "grid-cell", "autotune", "lesion"}),
        (_searches, "search method", {"autotune", "naswot", "conflict-at-init", "random"}),
        (_scorers, "scorer", {"conflict", "block-influence", "angular", "loss", "random"}),
    ],
    ids=["models", "datasets", "sweep-kinds", "searches", "scorers"],
)
def test_each_family_uses_a_registry(family, what, builtins):
    reg, lookup = family()
    with pytest.raises(ValueError, match=f"unknown {what} 'no-such-name'") as err:
        lookup("no-such-name")  # also loads lazily registered built-ins (sweep kinds)
    assert isinstance(reg, Registry) and reg.what == what
    assert builtins <= set(reg.names())
    for name in reg.names():
        assert name in str(err.value), (name, str(err.value))
    first = reg.names()[0]
    assert reg.get(first) is reg[first]
