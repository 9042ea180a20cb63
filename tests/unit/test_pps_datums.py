"""Datum identity and the cross/union combinators (services.pps.domain.datums)."""

from __future__ import annotations

import hashlib

from services.pps.domain.datums import cross, cross_count, datum_id, union, union_count

H1 = "a" * 64
H2 = "b" * 64


def test_datum_id_is_a_stable_sha256_hex():
    ident = datum_id([("in", "/f", H1)], "salt")
    assert ident == datum_id([("in", "/f", H1)], "salt")
    assert len(ident) == 64 and int(ident, 16) >= 0


def test_datum_id_depends_on_every_field_and_the_salt():
    base = datum_id([("in", "/f", H1)], "salt")
    assert datum_id([("in2", "/f", H1)], "salt") != base
    assert datum_id([("in", "/g", H1)], "salt") != base
    assert datum_id([("in", "/f", H2)], "salt") != base
    assert datum_id([("in", "/f", H1)], "salt2") != base
    assert datum_id([("in", "/f", H1)], "") != base


def test_datum_id_framing_is_unambiguous():
    # Moving characters between fields, or between a part and the salt, changes the id.
    assert datum_id([("ab", "/c", H1)], "s") != datum_id([("a", "b/c", H1)], "s")
    assert datum_id([("a", "/f", H1)], "s") != datum_id([("a", "/f", H1 + "s")], "")
    two = datum_id([("a", "/f", H1), ("b", "/g", H2)], "s")
    assert two != datum_id([("b", "/g", H2), ("a", "/f", H1)], "s")  # input order counts
    assert two != datum_id([("a", "/f", H1)], "s")
    assert datum_id([], "s") != datum_id([], "t")


def test_datum_id_is_not_the_plain_concatenation():
    plain = hashlib.sha256(b"in/f" + H1.encode() + b"salt").hexdigest()
    assert datum_id([("in", "/f", H1)], "salt") != plain


def test_cross_is_the_product_with_the_first_input_outermost():
    a = [("a1",), ("a2",)]
    b = [("b1",), ("b2",), ("b3",)]
    c = [("c1",), ("c2",)]
    got = list(cross(iter(a), [b, c]))
    assert got == [x + y + z for x in a for y in b for z in c]
    assert got[:3] == [("a1", "b1", "c1"), ("a1", "b1", "c2"), ("a1", "b2", "c1")]
    assert len(got) == cross_count([2, 3, 2]) == 12


def test_cross_of_one_input_is_that_input():
    assert list(cross(iter([("x",), ("y",)]), [])) == [("x",), ("y",)]


def test_cross_with_an_empty_input_is_empty_and_does_not_read_the_first():
    def first():
        raise AssertionError("the first input must not be read")
        yield ("never",)

    assert list(cross(first(), [[("b",)], []])) == []
    assert cross_count([3, 0, 2]) == 0
    assert cross_count([]) == 0


def test_cross_keeps_multi_part_datums_whole():
    left = [("l1", "l1x")]
    right = [("r1", "r1x"), ("r2", "r2x")]
    assert list(cross(iter(left), [right])) == [
        ("l1", "l1x", "r1", "r1x"),
        ("l1", "l1x", "r2", "r2x"),
    ]


def test_union_is_each_input_in_turn():
    got = list(union([[("a1",), ("a2",)], [], [("b1",)]]))
    assert got == [("a1",), ("a2",), ("b1",)]
    assert union_count([2, 0, 1]) == 3
