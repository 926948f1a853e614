from dataclasses import dataclass

import pytest

from tacleaner.errors import TacleanerError
from tacleaner.registry import Registry


def make():
    reg = Registry("widget")

    @reg.register("plain")
    @dataclass
    class Plain:
        size: int = 1
        colour: str = "red"

    return reg, Plain


def test_create_drops_none_and_uses_defaults():
    reg, Plain = make()
    w = reg.create("plain", size=None, colour="blue")
    assert (w.size, w.colour) == (1, "blue")


def test_unknown_name_lists_valid_ones():
    reg, _ = make()
    with pytest.raises(TacleanerError, match=r"unknown widget 'nope'; choose one of: plain"):
        reg.create("nope")


def test_unknown_parameter_names_valid_ones():
    reg, _ = make()
    with pytest.raises(TacleanerError, match=r"widget 'plain' has no parameter 'weight'; valid: colour, size"):
        reg.create("plain", weight=3)


def test_registering_twice_warns():
    reg, Plain = make()
    with pytest.warns(UserWarning, match="registered twice"):
        reg.register("plain")(Plain)
    assert reg.names() == ["plain"] and "plain" in reg
