"""Property-based fuzzing of the public HTTP API against a running node.

Random methods, paths (documented routes with odd segments, percent-encoded bytes, huge and empty
keys), query strings, headers and bodies. Whatever comes in: no 5xx, the node keeps serving, every
error is the documented ``{"error": {"code", "message"}}`` shape, and the stored keys are exactly
those the accepted writes left (a rejected request stores nothing).
``KVCLUSTER_FUZZ_EXAMPLES`` raises the number of requests (``make fuzz-long``).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcluster.server.openapi import ERROR_CODES

from .conftest import ClusterFactory

MAX_KEY = 256
MAX_VALUE = 4096
# The node's request-line limit for this key limit (max(8190, 3 * key limit + 1024)): a longer line is
# refused by aiohttp's HTTP parser with a plain-text 400 before the application sees it.
LINE_LIMIT = 8190
EXAMPLES = int(os.environ.get("KVCLUSTER_FUZZ_EXAMPLES", "300"))
# Methods the HTTP parser knows: a request line it cannot parse (e.g. method FOO) is not HTTP and gets
# aiohttp's plain-text 400 before any application code runs.
METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def enc(raw: bytes) -> str:
    return quote(raw, safe="/")


segment = st.one_of(
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
    st.binary(max_size=12).map(lambda b: quote(b, safe="")),
    st.sampled_from(["", "%", "%zz", "%2", "..", ".", "%00", "-1", "0", "99999999999999999999999", "1e3"]),
    st.integers(min_value=-5, max_value=2**70).map(str),
)
key_path = st.one_of(
    st.binary(min_size=0, max_size=40).map(enc),
    st.text(max_size=30).map(lambda s: quote(s, safe="/")),
    st.integers(min_value=MAX_KEY - 2, max_value=MAX_KEY + 3).map(lambda n: "k" * n),
    st.just("x" * 6000),
    st.sampled_from(["%", "%zz", "a%2", "%ff%fe", "a/../b", "//", "a?b"]),
).map(lambda p: "/v1/kv/fz" + p)
# Admin ids never name a real node or partition: the fuzzer must not reshape the cluster.
admin_id = st.one_of(
    st.integers(min_value=500, max_value=2**70).map(str), segment.filter(lambda s: not s.isdigit())
)
admin_path = st.builds(
    lambda i, tail: f"/v1/admin/{tail[0]}/{i}{tail[1]}",
    admin_id,
    st.sampled_from(
        [
            ("nodes", ""),
            ("nodes", "/drain"),
            ("partitions", "/split"),
            ("partitions", "/merge"),
            ("partitions", "/replicas"),
            ("partitions", "/leader"),
        ]
    ),
)
other_path = st.one_of(
    st.sampled_from(
        ["/v1/kv", "/v1/routing", "/v1/cluster", "/v1/openapi.json", "/healthz", "/readyz", "/ui"]
    ),
    st.lists(segment, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
    st.lists(segment, min_size=1, max_size=3).map(lambda s: "/v1/" + "/".join(s)),
    st.builds(lambda s: "/ui/" + s, segment),
)
query = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(
            st.sampled_from(["limit", "prefix", "start", "consistency", "if_version", "x", "", "%ff"]),
            st.one_of(segment, st.just("x" * 2000)),
        ),
        max_size=4,
    ).map(lambda kv: "?" + "&".join(f"{k}={v}" for k, v in kv)),
)
json_body = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
).map(lambda v: json.dumps(v).encode())
body = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_body,
    st.sampled_from(
        [
            b"{",
            b"[]",
            b'{"nodes": "x"}',
            b'{"add": -1}',
            b'{"node": true}',
            b"\xff\xfe",
            b'{"node": 1e400}',
            b'{"add": 99999999999999999999999}',
        ]
    ),
    st.integers(min_value=MAX_VALUE - 2, max_value=MAX_VALUE + 2).map(lambda n: b"v" * n),
)
header_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
headers = st.dictionaries(
    st.sampled_from(["Content-Type", "Accept", "Authorization", "X-Whatever", "Content-Encoding", "Expect"]),
    header_value,
    max_size=3,
)


@dataclass
class Model:
    """What the accepted writes under the fuzz prefix should have left behind."""

    stored: dict[bytes, bool] = field(default_factory=dict)


def request(
    host: str, port: int, method: str, target: str, data: bytes, hdrs: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=15)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in hdrs.items():
            if k.lower() != "content-length":
                conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check_error_shape(status: int, method: str, answer: bytes, what: str) -> None:
    if method == "HEAD":
        return
    doc = json.loads(answer)
    assert set(doc) == {"error"}, what
    err = doc["error"]
    assert isinstance(err["message"], str) and err["message"], what
    assert err["code"] in ERROR_CODES, what


def stored_keys(host: str, port: int) -> set[bytes]:
    keys: set[bytes] = set()
    start = ""
    while True:
        status, _, answer = request(host, port, "GET", f"/v1/kv?prefix=fz&limit=1000{start}", b"", {})
        assert status == 200, answer
        page = json.loads(answer)
        for item in page["items"]:
            k = item["key"]
            keys.add(base64.b64decode(k) if item["encoding"] == "base64" else k.encode())
        if page["next"] is None:
            return keys
        start = "&start=" + page["next"]


def test_fuzzed_requests_get_documented_answers_and_store_nothing_on_error(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(
        nodes=3,
        partitions=2,
        replicas=3,
        node_args=["--max-key-bytes", str(MAX_KEY), "--max-value-bytes", str(MAX_VALUE)],
    )
    url = urlsplit(cluster.urls()[0])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    model = Model()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        method=st.sampled_from(METHODS),
        path=st.one_of(key_path, admin_path, other_path),
        qs=query,
        data=body,
        hdrs=headers,
    )
    def one_request(method: str, path: str, qs: str, data: bytes, hdrs: dict[str, str]) -> None:
        what = f"{method} {path[:200]}{qs[:200]} body={data[:80]!r} headers={hdrs}"
        status, answer_headers, answer = request(host, port, method, path + qs, data, hdrs)
        assert status < 500, f"{what} -> {status} {answer[:300]!r}"
        if len(method) + len(path + qs) + 10 > LINE_LIMIT:
            assert status == 400, what  # not parsed as HTTP: nothing can have been stored
        elif status >= 400:
            assert answer_headers.get("content-type", "").startswith("application/json"), what
            check_error_shape(status, method, answer, what)
        elif path.startswith("/v1/kv/") and method in ("PUT", "DELETE"):
            key = unquote_to_bytes(path.partition("?")[0][len("/v1/kv/") :])
            model.stored[key] = method == "PUT"
        # Whatever happened, the node still serves.
        ok, _, _ = request(host, port, "GET", "/healthz", b"", {})
        assert ok == 200, f"node stopped serving after {what}"

    one_request()
    expected = {k for k, present in model.stored.items() if present}
    assert stored_keys(host, port) == expected
