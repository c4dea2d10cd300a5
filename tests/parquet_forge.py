"""Parquet files whose footer lies (for the hostile-tree suite): row counts rewritten in the Thrift compact
footer, the pages left as the writer wrote them (their checksums still match).

Written from the Parquet format's Thrift definitions, independently of logs_schema.pagecrc (which reads
the same encoding), so a bug there cannot hide itself here: FileMetaData {3: i64 num_rows, 4:
list<RowGroup>}, RowGroup {1: list<ColumnChunk>, 3: i64 num_rows}, ColumnChunk {3: ColumnMetaData},
ColumnMetaData {5: i64 num_values}.
"""
from __future__ import annotations

from pathlib import Path

_I64, _LIST, _STRUCT = 6, 9, 12


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _encode_i64(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()  # zigzag, then varint
    while True:
        out.append((z & 0x7F) | (0x80 if z > 0x7F else 0))
        z >>= 7
        if not z:
            return bytes(out)


def _skip(buf: bytes, pos: int, t: int, in_list: bool = False) -> int:
    if t in (1, 2):  # booleans: in the field header, or one byte in a list
        return pos + 1 if in_list else pos
    if t == 3:
        return pos + 1
    if t in (4, 5, 6):
        return _varint(buf, pos)[1]
    if t == 7:
        return pos + 8
    if t == 8:
        n, pos = _varint(buf, pos)
        return pos + n
    if t in (9, 10):
        n, elem, pos = _list_head(buf, pos)
        for _ in range(n):
            pos = _skip(buf, pos, elem, True)
        return pos
    if t == 11:
        n, pos = _varint(buf, pos)
        if n:
            kv, pos = buf[pos], pos + 1
            for _ in range(n):
                pos = _skip(buf, _skip(buf, pos, kv >> 4, True), kv & 0x0F, True)
        return pos
    if t == _STRUCT:
        return _rewrite(buf, pos, {}, bytearray())[1]
    raise ValueError(f"thrift compact type {t}")


def _list_head(buf: bytes, pos: int) -> tuple[int, int, int]:
    head, pos = buf[pos], pos + 1
    n = head >> 4
    if n == 15:
        n, pos = _varint(buf, pos)
    return n, head & 0x0F, pos


def _rewrite(buf: bytes, pos: int, plan: dict, out: bytearray) -> tuple[bytearray, int]:
    """Copy the struct at pos into out; plan: field id -> an int (a new i64 value) or a plan for the
    struct (or each struct of the list) in that field."""
    fid = 0
    while True:
        head = buf[pos]
        if head == 0:
            out.append(0)
            return out, pos + 1
        delta, t = head >> 4, head & 0x0F
        start = pos + 1
        if delta:
            fid += delta
        else:
            raw, start = _varint(buf, start)
            fid = (raw >> 1) ^ -(raw & 1)
        out += buf[pos:start]
        want = plan.get(fid)
        if isinstance(want, int) and t == _I64:
            out += _encode_i64(want)
            pos = _varint(buf, start)[1]
        elif isinstance(want, dict) and t == _STRUCT:
            out, pos = _rewrite(buf, start, want, out)
        elif isinstance(want, dict) and t == _LIST:
            n, _, pos = _list_head(buf, start)
            out += buf[start:pos]
            for _ in range(n):
                out, pos = _rewrite(buf, pos, want, out)
        else:
            pos = _skip(buf, start, t)
            out += buf[start:pos]


def claim_rows(path: Path, rows: int, values_too: bool = False) -> None:
    """Make the file's footer claim `rows` rows (FileMetaData and every RowGroup), and with values_too
    every column chunk as many values, so the footer agrees with itself and only the pages tell."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[-8:-4], "little")
    footer = raw[-8 - n:-8]
    group = {3: rows, **({1: {3: {5: rows}}} if values_too else {})}
    new, end = _rewrite(footer, 0, {3: rows, 4: group}, bytearray())
    assert end == len(footer), "footer not walked to its end"
    Path(path).write_bytes(raw[:-8 - n] + bytes(new) + len(new).to_bytes(4, "little") + b"PAR1")
