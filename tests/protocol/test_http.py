"""The metrics door's request-head reader (zcounter.protocol.http), fuzzed with
Hypothesis: raw bytes and well-formed heads, cut at any points.  Whatever arrives, the
reader returns a verdict (never raises), holds at most its bound plus one read, and a
head's verdict does not depend on how the bytes were split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.protocol.http import NEED_MORE, Head, HeadReader, Problem, Refused

MAX = 1024
FUZZ = settings(max_examples=300, deadline=None)

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                 max_size=40).map(str.strip)
_path = st.lists(_token, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def heads(draw: st.DrawFn) -> tuple[bytes, str, str, dict[str, str]]:
    method = draw(st.sampled_from(["GET", "HEAD"]))
    target = draw(_path)
    headers = draw(st.dictionaries(_token.filter(lambda t: t != "host"), _value,
                                   max_size=6))
    lines = [f"{method} {target} HTTP/1.1", "Host: node"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), method, target, headers


def feed_split(data: bytes, cuts: list[int], max_bytes: int = MAX) -> object:
    reader = HeadReader(max_bytes)
    verdict: object = NEED_MORE
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut == start:
            continue  # b"" means the client closed; recv never returns it otherwise
        verdict = reader.feed(data[start:cut])
        start = cut
        if verdict is not NEED_MORE:
            break
    # Once decided, the reader keeps its verdict whatever follows.
    assert reader.feed(b"more bytes\r\n\r\n") is verdict or verdict is NEED_MORE
    return verdict


@FUZZ
@given(st.binary(max_size=3 * MAX), st.lists(st.integers(0, 4 * MAX), max_size=8))
def test_raw_bytes_get_a_verdict_and_never_an_exception(data: bytes, cuts: list[int]) -> None:
    verdict = feed_split(data, cuts)
    assert verdict is NEED_MORE or isinstance(verdict, (Head, Refused))
    if isinstance(verdict, Refused):
        assert verdict.status in (400, 405, 414, 431, 505)
    if isinstance(verdict, Head):
        assert verdict.method in ("GET", "HEAD")


@FUZZ
@given(heads(), st.lists(st.integers(0, 4 * MAX), max_size=8))
def test_a_well_formed_head_is_read_the_same_however_it_is_split(
        head: tuple[bytes, str, str, dict[str, str]], cuts: list[int]) -> None:
    data, method, target, headers = head
    verdict = feed_split(data, cuts)
    assert isinstance(verdict, Head), verdict
    assert (verdict.method, verdict.target) == (method, target)
    assert verdict.header("host") == "node"
    for name, value in headers.items():
        assert verdict.header(name) == value


@FUZZ
@given(heads(), st.binary(min_size=1, max_size=64), st.lists(st.integers(0, 8 * MAX),
                                                             max_size=8))
def test_a_head_over_the_bound_is_refused_431_however_it_arrives(
        head: tuple[bytes, str, str, dict[str, str]], junk: bytes, cuts: list[int]) -> None:
    data = head[0]
    big = data[:-2] + b"X-Pad: " + b"p" * (MAX + 1) + b"\r\n\r\n" + junk
    verdict = feed_split(big, cuts)
    assert isinstance(verdict, Refused) and verdict.problem is Problem.TOO_LARGE
    assert verdict.status == 431


@FUZZ
@given(st.binary(min_size=1, max_size=64))
def test_a_head_that_never_ends_is_refused_once_past_the_bound(chunk: bytes) -> None:
    """A slow-loris header line fed a chunk at a time: decided (431, or 400 for bytes
    no header may hold) by the read that crosses the bound, never buffered further."""
    chunk = chunk.replace(b"\n", b"x")
    reader = HeadReader(MAX)
    fed = len(start := b"GET / HTTP/1.1\r\nX: ")
    verdict = reader.feed(start)
    while verdict is NEED_MORE:
        assert fed <= MAX, "still reading past the bound"
        verdict = reader.feed(chunk)
        fed += len(chunk)
    assert isinstance(verdict, Refused) and verdict.status in (400, 431)


def test_other_methods_get_405_and_a_closed_half_head_400() -> None:
    assert HeadReader().feed(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n") == Refused(
        405, "Method Not Allowed", Problem.BAD_REQUEST)
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") is NEED_MORE
    verdict = reader.feed(b"")
    assert isinstance(verdict, Refused) and verdict.status == 400
