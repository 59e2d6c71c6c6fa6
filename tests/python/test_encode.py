"""fastret.native().encode_json: the encoder every record's payload goes through. Whatever
Python hands it, the output is one valid JSON value (json.loads parses it)."""

import base64
import json
import re
import pytest

import fastret

MARKER = "__fastret_truncated__"


@pytest.fixture(scope="module")
def enc():
    return fastret.native().encode_json


def roundtrip(enc, value, **kw):
    text = enc(value, **kw)
    assert isinstance(text, str)
    return json.loads(text)


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1, 2, {"c": None}]},
    [1, "two", 3.5, True, False, None],
    "plain",
    "h\u00e9llo \u2603 \U0001f600",
    "",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.25,
    1e308,
    True,
    False,
    None,
    {},
    [],
])
def test_json_native_types_round_trip(enc, value):
    assert roundtrip(enc, value) == value


def test_tuple_and_set_become_arrays(enc):
    assert roundtrip(enc, (1, "a", None)) == [1, "a", None]
    assert sorted(roundtrip(enc, {3, 1, 2})) == [1, 2, 3]
    assert roundtrip(enc, frozenset()) == []
    assert roundtrip(enc, {"t": (1, (2, (3,)))}) == {"t": [1, [2, [3]]]}


@pytest.mark.parametrize("value", [2**64, 2**200, -(2**200), 10**50 + 7])
def test_big_int_keeps_every_digit(enc, value):
    text = enc(value)
    assert text == str(value)
    assert json.loads(text) == value


def test_nan_and_infinity_are_valid_json(enc):
    # Strict JSON has no NaN/Infinity literals: the encoder must not write them.
    def no_literals(name):
        pytest.fail(f"non-standard JSON literal {name}")

    text = enc({"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1.25})
    out = json.loads(text, parse_constant=no_literals)
    assert out["ok"] == 1.25
    # Kept distinguishable (as strings), not collapsed into one value.
    assert all(isinstance(out[k], str) for k in ("nan", "inf", "ninf"))
    assert len({out["nan"], out["inf"], out["ninf"]}) == 3


def test_bool_is_not_an_int(enc):
    assert enc(True) == "true"
    assert enc(False) == "false"
    assert roundtrip(enc, [True, 1, False, 0]) == [True, 1, False, 0]
    assert [type(v) for v in roundtrip(enc, [True, 1])] == [bool, int]


def test_bytes_as_text(enc):
    assert roundtrip(enc, b"hello") == "hello"
    assert roundtrip(enc, bytearray(b"bytearray")) == "bytearray"
    assert roundtrip(enc, "\u20ac".encode()) == "\u20ac"


def test_bytes_as_base64(enc):
    raw = bytes(range(256))
    assert base64.b64decode(roundtrip(enc, raw, bytes_base64=True)) == raw
    assert roundtrip(enc, {"k": b"\xff\x00"}, bytes_base64=True) == {
        "k": base64.b64encode(b"\xff\x00").decode()}


def collapse(text):
    return re.sub("\ufffd+", "\ufffd", text)


@pytest.mark.parametrize("raw", [
    b"\xff",
    b"ok \xff\xfe bad",
    b"\xc3\x28",               # invalid continuation
    b"\xe2\x82",               # truncated sequence at the end
    b"\xed\xa0\x80",           # encoded surrogate (CESU-8)
    b"\xc0\xaf",               # overlong '/'
    b"\xf4\x90\x80\x80",       # beyond U+10FFFF
    b"\x00\x01\x1f\x7f",
])
def test_invalid_utf8_bytes_are_replaced(enc, raw):
    out = roundtrip(enc, raw)
    # Valid UTF-8 is kept and invalid sequences become U+FFFD, as with Python's decoder and
    # errors="replace". (fastret replaces byte by byte; Python replaces a truncated sequence's
    # "maximal subpart" with one U+FFFD: runs of U+FFFD are compared collapsed.)
    expected = raw.decode("utf-8", errors="replace")
    assert collapse(out) == collapse(expected)
    out.encode("utf-8")  # no lone surrogates leaked through


def test_invalid_utf8_in_keys_and_nested(enc):
    out = roundtrip(enc, {b"k\xff": [b"v\xfe"]})
    assert out == {"k\ufffd": ["v\ufffd"]}


@pytest.mark.parametrize("text", ["a\ud800b", "\udcff", "x\udfff\ud800y", "\ud83d"])
def test_lone_surrogates_become_replacement_characters(enc, text):
    out = roundtrip(enc, text)
    out.encode("utf-8")  # strictly encodable: no surrogate survived
    # The valid characters survive in order; each surrogate is replaced, not dropped silently.
    assert out.replace("\ufffd", "") == "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
    assert "\ufffd" in out


def test_surrogateescape_decoded_output(enc):
    # What os.fsdecode / subprocess with surrogateescape produce for undecodable bytes.
    text = b"file-\xff-name".decode("utf-8", errors="surrogateescape")
    out = roundtrip(enc, {"path": text})
    assert out["path"].startswith("file-") and out["path"].endswith("-name")
    out["path"].encode("utf-8")


def test_non_str_dict_keys(enc):
    value = {7: "int", None: "none", True: "true", False: "false", (1, 2): "tuple", 2.5: "float"}
    out = roundtrip(enc, value)
    # Same spelling as json.dumps for the types it accepts; str() for tuples.
    assert out["7"] == "int"
    assert out["null"] == "none"
    assert out["true"] == "true"
    assert out["false"] == "false"
    assert out["2.5"] == "float"
    assert out[str((1, 2))] == "tuple"
    expected = json.loads(json.dumps({k: v for k, v in value.items() if not isinstance(k, tuple)}))
    assert {k: v for k, v in out.items() if k != str((1, 2))} == expected


class FailingStr:
    def __str__(self):
        raise RuntimeError("no str for you")

    def __repr__(self):
        raise RuntimeError("no repr either")


class Custom:
    def __str__(self):
        return "custom-object"


def test_unknown_objects_via_str(enc):
    assert roundtrip(enc, Custom()) == "custom-object"
    assert roundtrip(enc, {"o": Custom(), "l": [Custom()]}) == {"o": "custom-object",
                                                              "l": ["custom-object"]}
    assert roundtrip(enc, {Custom(): 1}) == {"custom-object": 1}


def test_failing_str_never_raises(enc):
    out = roundtrip(enc, {"value": FailingStr(), "list": [FailingStr(), 1]})
    assert isinstance(out["value"], str) and "FailingStr" in out["value"]
    assert out["list"][1] == 1
    key_out = roundtrip(enc, {FailingStr(): "v"})
    assert list(key_out.values()) == ["v"]
    assert "FailingStr" in next(iter(key_out))


def test_str_returning_surrogates(enc):
    class Weird:
        def __str__(self):
            return "w\udc80w"

    out = roundtrip(enc, [Weird()])
    assert out[0].startswith("w") and out[0].endswith("w")
    out[0].encode("utf-8")


def depth_of_marker(value, key):
    """How many `key` levels lead to the truncation marker; None if there is none."""
    depth = 0
    while isinstance(value, dict):
        if MARKER in value:
            return depth
        if key not in value:
            return None
        value = value[key]
        depth += 1
    return None


def test_self_referencing_dict_is_cut_with_marker(enc):
    d = {"name": "loop"}
    d["self"] = d
    out = roundtrip(enc, d, max_depth=10)
    assert depth_of_marker(out, "self") == 10
    cut = out
    for _ in range(10):
        assert cut["name"] == "loop"
        cut = cut["self"]
    assert cut[MARKER] == "depth"


def test_self_referencing_list_is_cut_with_marker(enc):
    lst = [1]
    lst.append(lst)
    out = roundtrip(enc, lst, max_depth=5)
    for _ in range(5):
        assert out[0] == 1
        out = out[1]
    assert out[MARKER] == "depth"


def test_default_depth_limit_on_a_cycle(enc):
    d = {}
    d["d"] = d
    assert depth_of_marker(roundtrip(enc, d), "d") == 100


def nested(levels):
    root = cur = {}
    for _ in range(levels):
        cur["d"] = {}
        cur = cur["d"]
    cur["leaf"] = True
    return root


@pytest.mark.parametrize("max_depth", [1, 50, 100, 150])
def test_200_levels_truncated_at_max_depth(enc, max_depth):
    out = roundtrip(enc, nested(200), max_depth=max_depth)
    assert depth_of_marker(out, "d") == max_depth
    node = out
    for _ in range(max_depth):
        node = node["d"]
    assert node == {MARKER: "depth", "type": "dict"} or node[MARKER] == "depth"


def test_nesting_within_limit_is_kept(enc):
    value = nested(200)
    assert roundtrip(enc, value, max_depth=300) == value


def test_deep_lists_truncated(enc):
    root = cur = []
    for _ in range(200):
        nxt = []
        cur.append(nxt)
        cur = nxt
    out = roundtrip(enc, root, max_depth=100)
    for _ in range(100):
        assert isinstance(out, list) and len(out) == 1
        out = out[0]
    assert out[MARKER] == "depth"


def test_five_megabyte_string_round_trips(enc):
    big = ("0123456789abcdef\"\\\u00e9" * (5 * 1024 * 1024 // 19 + 1))[: 5 * 1024 * 1024]
    assert len(big) == 5 * 1024 * 1024
    assert roundtrip(enc, {"big": big}) == {"big": big}


def test_five_megabyte_bytes_round_trip(enc):
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    assert base64.b64decode(roundtrip(enc, big, bytes_base64=True)) == big


def test_control_characters_and_quotes_escaped(enc):
    text = "".join(chr(c) for c in range(0x20)) + "\"\\/\u2028\u2029\x7f"
    assert roundtrip(enc, {text: text}) == {text: text}


@pytest.mark.parametrize("value", [
    float("nan"),
    {"cycle": None},
    [b"\xff", "\ud800", FailingStr(), Custom(), 2**100, float("inf"), {1: 2}, (1,), {3}],
    {None: {True: {(1,): {b"\xfe": [FailingStr()]}}}},
])
def test_output_always_parses(enc, value):
    if isinstance(value, dict) and "cycle" in value:
        value["cycle"] = value
    for kw in ({}, {"bytes_base64": True}, {"max_depth": 1}, {"max_depth": 2}):
        json.loads(enc(value, **kw))
