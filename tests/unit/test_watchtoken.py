"""Watch resume tokens: segments tiling the watched hash range, coalesced, and strict refusal of the rest."""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import pytest

from kvcluster.client.watchtoken import PREFIX, Segment, TokenError, decode, encode
from kvcluster.keyspace import HASH_SPACE

HALF = HASH_SPACE // 2


def triples_of(token: str) -> Any:
    assert token.startswith(PREFIX)
    body = token[len(PREFIX) :]
    return msgpack.unpackb(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def token_of(obj: Any) -> str:
    """A token carrying any msgpack value, as a forger (or a bug) would make one."""
    return PREFIX + base64.urlsafe_b64encode(msgpack.packb(obj)).decode().rstrip("=")


def test_round_trip_coalesces_adjacent_equal_revisions() -> None:
    segments = [
        Segment(0, 100, 5),
        Segment(100, 200, 5),
        Segment(200, HALF, 5),
        Segment(HALF, HALF + 10, 7),
        Segment(HALF + 10, HASH_SPACE, 5),
    ]
    token = encode(segments)
    assert token.startswith("1.")
    assert "=" not in token and "+" not in token and "/" not in token, "URL-safe, unpadded"
    assert triples_of(token) == [
        [0, HALF - 1, 5],
        [HALF, HALF + 9, 7],
        [HALF + 10, HASH_SPACE - 1, 5],
    ]
    assert decode(token, 0, HASH_SPACE) == [
        Segment(0, HALF, 5),
        Segment(HALF, HALF + 10, 7),
        Segment(HALF + 10, HASH_SPACE, 5),
    ]


def test_equal_revisions_that_do_not_touch_are_not_coalesced() -> None:
    # Not a tiling (there is a hole at [10, 20)), so encode must keep both triples as they are
    # rather than paper over the hole; decode then refuses it.
    token = encode([Segment(0, 10, 3), Segment(20, 30, 3)])
    assert triples_of(token) == [[0, 9, 3], [20, 29, 3]]
    with pytest.raises(TokenError):
        decode(token, 0, 30)


def test_full_hash_space_in_one_segment() -> None:
    token = encode([Segment(0, HASH_SPACE, 123456789)])
    assert triples_of(token) == [[0, HASH_SPACE - 1, 123456789]]
    assert decode(token, 0, HASH_SPACE) == [Segment(0, HASH_SPACE, 123456789)]


def test_large_revisions_and_the_top_of_the_space_survive() -> None:
    rev = (1 << 63) - 1
    token = encode([Segment(0, HASH_SPACE - 1, rev), Segment(HASH_SPACE - 1, HASH_SPACE, 0)])
    assert decode(token, 0, HASH_SPACE) == [
        Segment(0, HASH_SPACE - 1, rev),
        Segment(HASH_SPACE - 1, HASH_SPACE, 0),
    ]


@pytest.mark.parametrize("point", [0, 12345, HASH_SPACE - 1])
def test_a_single_point_range(point: int) -> None:
    token = encode([Segment(point, point + 1, 9)])
    assert triples_of(token) == [[point, point, 9]]
    assert decode(token, point, point + 1) == [Segment(point, point + 1, 9)]
    with pytest.raises(TokenError):
        decode(token, 0, HASH_SPACE)


def test_revision_zero_is_accepted() -> None:
    token = encode([Segment(0, HASH_SPACE, 0)])
    assert decode(token, 0, HASH_SPACE) == [Segment(0, HASH_SPACE, 0)]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "1",
        "2." + encode([Segment(0, HASH_SPACE, 1)])[2:],
        "x" + encode([Segment(0, HASH_SPACE, 1)]),
        encode([Segment(0, HASH_SPACE, 1)])[2:],
    ],
)
def test_wrong_prefix_is_refused(token: str) -> None:
    with pytest.raises(TokenError, match="not a watch token"):
        decode(token, 0, HASH_SPACE)


@pytest.mark.parametrize(
    "body",
    [
        "",  # nothing at all
        "A",  # one base64 character cannot encode any byte
        "!!!!",  # no base64 characters at all
        "AAAAA",
        base64.urlsafe_b64encode(b"\xc1").decode(),  # a byte msgpack never uses
        base64.urlsafe_b64encode(b"\x93\x01").decode(),  # an array cut short
        base64.urlsafe_b64encode(msgpack.packb([[0, 1, 1]]) + b"\x00").decode(),  # trailing bytes
        base64.urlsafe_b64encode(b"\xa2\xff\xfe").decode(),  # a string that is not UTF-8
    ],
)
def test_garbage_is_refused(body: str) -> None:
    with pytest.raises(TokenError, match="not a watch token"):
        decode(PREFIX + body, 0, HASH_SPACE)


@pytest.mark.parametrize("obj", [7, "text", b"bytes", None, {"a": 1}, [], 1.5, True])
def test_a_non_list_or_empty_list_is_refused(obj: Any) -> None:
    with pytest.raises(TokenError, match="not a watch token"):
        decode(token_of(obj), 0, HASH_SPACE)


@pytest.mark.parametrize(
    "triples",
    [
        [[0, HASH_SPACE - 1]],
        [[0, HASH_SPACE - 1, 1, 1]],
        [[]],
        [5],
        [None],
        ["0,1,2"],
        [{"start": 0}],
        [[0, HASH_SPACE - 1, "1"]],
        [[0, HASH_SPACE - 1, 1.0]],
        [["0", HASH_SPACE - 1, 1]],
        [[0, HASH_SPACE - 1, None]],
        [[0, HASH_SPACE - 1, [1]]],
        [[0, 9, 1], [10, HASH_SPACE - 1]],
    ],
)
def test_wrong_triple_shapes_are_refused(triples: Any) -> None:
    with pytest.raises(TokenError, match="not a watch token"):
        decode(token_of(triples), 0, HASH_SPACE)


@pytest.mark.parametrize(
    "triples",
    [
        [[False, HASH_SPACE - 1, 1]],
        [[0, HASH_SPACE - 1, True]],
        [[0, HASH_SPACE - 1, False]],
        [[0, True, 1], [2, HASH_SPACE - 1, 1]],
    ],
)
def test_bools_are_not_integers(triples: Any) -> None:
    with pytest.raises(TokenError, match="not a watch token"):
        decode(token_of(triples), 0, HASH_SPACE)


def test_a_negative_revision_is_refused() -> None:
    with pytest.raises(TokenError):
        decode(token_of([[0, HASH_SPACE - 1, -1]]), 0, HASH_SPACE)
    with pytest.raises(TokenError):
        decode(token_of([[0, 9, 4], [10, HASH_SPACE - 1, -5]]), 0, HASH_SPACE)


@pytest.mark.parametrize(
    "triples",
    [
        [[0, 9, 1], [11, HASH_SPACE - 1, 1]],  # a gap
        [[0, 10, 1], [10, HASH_SPACE - 1, 2]],  # an overlap
        [[0, 10, 1], [5, HASH_SPACE - 1, 2]],  # a deeper overlap
        [[0, HASH_SPACE - 1, 1], [0, HASH_SPACE - 1, 1]],  # the range twice
        [[1, HASH_SPACE - 1, 1]],  # starts late
        [[0, 9, 1], [10, 5, 1]],  # a segment that ends before it starts
        [[0, 9, 1], [10, 9, 1], [10, HASH_SPACE - 1, 1]],  # an empty segment
        [[-1, HASH_SPACE - 1, 1]],
    ],
)
def test_gaps_and_overlaps_are_refused(triples: Any) -> None:
    with pytest.raises(TokenError, match="do not match"):
        decode(token_of(triples), 0, HASH_SPACE)


@pytest.mark.parametrize(
    "triples",
    [
        [[0, HASH_SPACE - 2, 1]],  # one hash short of the top
        [[0, HALF - 1, 1]],
        [[0, 9, 1], [10, HALF, 2]],
    ],
)
def test_not_covering_the_whole_range_is_refused(triples: Any) -> None:
    with pytest.raises(TokenError, match="do not match"):
        decode(token_of(triples), 0, HASH_SPACE)


def test_a_token_from_a_different_range_is_refused() -> None:
    whole = encode([Segment(0, HALF, 3), Segment(HALF, HASH_SPACE, 4)])
    assert decode(whole, 0, HASH_SPACE)  # valid where it belongs
    for start, end in ((0, HALF), (HALF, HASH_SPACE), (1, HASH_SPACE), (0, HASH_SPACE - 1), (77, 78)):
        with pytest.raises(TokenError, match="do not match"):
            decode(whole, start, end)
    point = encode([Segment(77, 78, 5)])
    assert decode(point, 77, 78) == [Segment(77, 78, 5)]
    for start, end in ((78, 79), (76, 77), (76, 78), (77, 79), (0, HASH_SPACE)):
        with pytest.raises(TokenError, match="do not match"):
            decode(point, start, end)
