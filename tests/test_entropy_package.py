"""Tests of the rcc.entropy package layout: one module per concept, every name where users find it."""

from __future__ import annotations

import importlib

import pytest

import rcc
from rcc import entropy as E

MODULES = ["index_codes", "bucket_codes", "conditioned", "factor_codes", "messages", "reports", "streams", "_checks"]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_all_and_defines_it(name):
    module = importlib.import_module(f"rcc.entropy.{name}")
    assert isinstance(module.__all__, list)
    for public in module.__all__:
        assert hasattr(module, public), f"rcc.entropy.{name}.__all__ names a missing {public}"


def test_package_reexports_every_public_name_once():
    defined = [n for name in MODULES for n in importlib.import_module(f"rcc.entropy.{name}").__all__]
    assert sorted(defined) == sorted(E.__all__)
    for name in E.__all__:
        assert getattr(E, name) is getattr(rcc, name, getattr(E, name))


def test_saved_conditioned_codes_load_through_the_base_registry(tmp_path):
    # index_codes cannot import the conditioned code built on it; the registry connects them.
    code = E.ConditionedIndexCode([0.5], [E.ZipfIndexCode(1.0), E.ZipfIndexCode(3.0)], E.ZipfIndexCode(2.0))
    path = tmp_path / "code.json"
    code.save(path)
    assert E.load_index_code(path) == code
    assert E.IndexCode.from_dict(code.to_dict()) == code
    with pytest.raises(ValueError, match="not a ZipfIndexCode"):
        E.ZipfIndexCode.from_dict(code.to_dict())
