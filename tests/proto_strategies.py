"""Hypothesis strategies that build any request message from its proto descriptor.

Values lean on what breaks services: boundaries and extremes of every integer type,
NaN and infinities, empty, huge and hostile strings (NUL, SQL, separators, unicode),
real-looking ids and genre names, lists from empty to over every bound, nested messages
and each branch of a oneof.
"""

from __future__ import annotations

import base64
import json

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from movierec import limits
from movierec.data.movielens import GENRES

F = FieldDescriptor
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
HOSTILE_TEXT = ["", " ", "\x00", "Nope", "Action,Comedy", "' OR '1'='1", "%", "_", "*",
                "a" * 1000, "é🎬", "Drama\n", "../../etc/passwd", '{"o": 1e999}']
TOKENS = ["", "!!notbase64", base64.urlsafe_b64encode(b'{"o":1e999}').decode(),
          base64.urlsafe_b64encode(json.dumps({"o": -5, "f": "x"}).encode()).decode(),
          base64.urlsafe_b64encode(b"\xff\xfe").decode(), "A" * 2000]


def _integers(field: FieldDescriptor) -> st.SearchStrategy:
    low, high = INT64 if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64) \
        else INT32
    return st.one_of(st.sampled_from([0, 1, -1, 5, 42, 3952, 6040, low, high]),
                     st.integers(min_value=-5, max_value=7000),
                     st.integers(min_value=low, max_value=high))


def _floats() -> st.SearchStrategy:
    return st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"),
                                      -float("inf"), 1e38, 1e-45]),
                     st.floats(width=32, allow_nan=True, allow_infinity=True))


def _strings(field: FieldDescriptor) -> st.SearchStrategy:
    if field.name == "page_token":
        return st.sampled_from(TOKENS)
    return st.one_of(st.sampled_from([*GENRES, *HOSTILE_TEXT, "M", "F", "fusion", "pinsage"]),
                     st.text(max_size=60))


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return _floats()
    if field.type == F.TYPE_STRING:
        return _strings(field)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    return _integers(field)


def _repeated(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    item = message(field.message_type, depth + 1) if field.type == F.TYPE_MESSAGE \
        else scalar(field)
    over = limits.MAX_EXCLUDE + 1
    small = st.lists(item, max_size=6)
    if field.type == F.TYPE_MESSAGE:
        return small
    return st.one_of(small, st.lists(item, min_size=over, max_size=over))


def value(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    if field.is_repeated:
        return _repeated(field, depth)
    if field.type == F.TYPE_MESSAGE:
        return message(field.message_type, depth + 1)
    return scalar(field)


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Dicts of field name -> value for ``descriptor`` (each oneof gets one branch)."""
    if depth > 3:
        return st.just({})
    in_oneof = {f.name for o in descriptor.oneofs for f in o.fields}
    plain = {f.name: value(f, depth) for f in descriptor.fields if f.name not in in_oneof}
    parts = [st.fixed_dictionaries({}, optional=plain)]
    for oneof in descriptor.oneofs:
        branches = [st.fixed_dictionaries({f.name: value(f, depth)}) for f in oneof.fields]
        parts.append(st.one_of(st.just({}), *branches))
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


def build(message_class, fields: dict):
    """The message with ``fields`` set (nested dicts become messages)."""
    out = message_class()
    for name, raw in fields.items():
        field = out.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            target = getattr(out, name)
            if field.type == F.TYPE_MESSAGE:
                for item in raw:
                    target.add().CopyFrom(build(field.message_type._concrete_class, item))
            else:
                target.extend(raw)
        elif field.type == F.TYPE_MESSAGE:
            getattr(out, name).CopyFrom(build(field.message_type._concrete_class, raw))
        else:
            setattr(out, name, raw)
    return out
