"""Hand-made histories: each operation gets its own process and explicit call/return times."""

from __future__ import annotations

import itertools
from typing import Literal

from kvcluster.lincheck.history import Func, Op

Status = Literal["ok", "fail", "info"]


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


class Builder:
    def __init__(self) -> None:
        self._records: list[tuple[int, int, Op]] = []
        self._sequence = itertools.count()
        self._process = itertools.count(1)

    def add(
        self,
        f: Func,
        *,
        call: int,
        ret: int | None = None,
        status: Status = "ok",
        key: str = "k",
        value: str | None = None,
        version: int | None = None,
        expected: int | None = None,
        error: str | None = None,
    ) -> Builder:
        process = next(self._process)
        invocation = Op(
            process=process,
            type="invoke",
            f=f,
            key=key.encode(),
            value=None if f == "read" else _b(value),
            expected_version=expected,
            time=call,
        )
        self._records.append((call, next(self._sequence), invocation))
        if status == "info" and ret is None:
            return self  # never completed: the history ends with it in flight
        assert ret is not None
        completion = Op(
            process=process,
            type=status,
            f=f,
            key=key.encode(),
            value=_b(value) if f != "read" or status == "ok" else None,
            version=version,
            expected_version=expected,
            time=ret,
            error=error,
        )
        self._records.append((ret, next(self._sequence), completion))
        return self

    def write(
        self,
        value: str,
        call: int,
        ret: int | None = None,
        *,
        version: int | None = None,
        status: Status = "ok",
    ) -> Builder:
        return self.add("write", call=call, ret=ret, status=status, value=value, version=version)

    def read(self, value: str | None, version: int | None, call: int, ret: int) -> Builder:
        return self.add("read", call=call, ret=ret, value=value, version=0 if value is None else version)

    def cas(
        self,
        expected: int,
        value: str,
        call: int,
        ret: int | None = None,
        *,
        version: int | None = None,
        status: Status = "ok",
        current: int | None = None,
    ) -> Builder:
        if status == "fail":
            return self.add(
                "cas",
                call=call,
                ret=ret,
                status="fail",
                value=value,
                expected=expected,
                version=current,
                error="version_conflict",
            )
        return self.add(
            "cas", call=call, ret=ret, status=status, value=value, expected=expected, version=version
        )

    def delete(self, call: int, ret: int | None = None, *, status: Status = "ok") -> Builder:
        return self.add("delete", call=call, ret=ret, status=status)

    def cas_delete(
        self,
        expected: int,
        call: int,
        ret: int | None = None,
        *,
        status: Status = "ok",
        current: int | None = None,
    ) -> Builder:
        if status == "fail":
            return self.add(
                "cas_delete",
                call=call,
                ret=ret,
                status="fail",
                expected=expected,
                version=current,
                error="version_conflict",
            )
        return self.add("cas_delete", call=call, ret=ret, status=status, expected=expected)

    def ops(self) -> list[Op]:
        return [record for _, _, record in sorted(self._records, key=lambda item: item[:2])]
