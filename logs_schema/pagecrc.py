"""Parquet page checksums, checked without decoding: CRC-32 of every page's bytes against the `crc`
field of its page header (Thrift compact protocol), at the speed of zlib.crc32.

Decoding a whole file with pyarrow's page_checksum_verification costs ~30 MB/s on two busy cores,
which made the first look at a 10M-row log take seconds; this walk reads the bytes once, a column
chunk (or, for a large one, a page) at a time. It only
ever answers True when every page of every column chunk had a checksum and matched and the pages
tiled each chunk exactly; anything else (a mismatch, a header it cannot parse, a file written
without checksums) is False or None, and the caller falls back to pyarrow's full verified read,
which stays the authority on what is damaged. The walk also adds up the values of each chunk's data
pages: a footer claiming more (or fewer) than the pages hold is refused outright (PagesDisagree),
whether the pages carry checksums or not, since pyarrow reads such a file without complaint.
"""
from __future__ import annotations

import zlib

import pyarrow.parquet as pq

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


def _varint(buf, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _skip(buf, pos: int, t: int, in_list: bool = False, depth: int = 0) -> int:
    """Position after a value of compact type t (a bool inside a list takes one byte). A hostile header
    cannot make it loop or recurse without bound: every element takes a byte, nesting stops at 32."""
    if depth > 32:
        raise ValueError("thrift structure nested too deep")
    if t in (_TRUE, _FALSE):
        return pos + 1 if in_list else pos
    if t == _BYTE:
        return pos + 1
    if t in (_I16, _I32, _I64):
        return _varint(buf, pos)[1]
    if t == _DOUBLE:
        if pos + 8 > len(buf):
            raise IndexError("thrift double past the buffer")
        return pos + 8
    if t == _BINARY:
        n, pos = _varint(buf, pos)
        return pos + n
    if t in (_LIST, _SET):
        head = buf[pos]
        pos += 1
        n = head >> 4
        if n == 15:
            n, pos = _varint(buf, pos)
        if n > len(buf) - pos:
            raise ValueError("thrift list longer than its buffer")
        for _ in range(n):
            pos = _skip(buf, pos, head & 0x0F, True, depth + 1)
        return pos
    if t == _MAP:
        n, pos = _varint(buf, pos)
        if n > len(buf) - pos:
            raise ValueError("thrift map longer than its buffer")
        if n:
            kv = buf[pos]
            pos += 1
            for _ in range(n):
                pos = _skip(buf, _skip(buf, pos, kv >> 4, True, depth + 1), kv & 0x0F, True, depth + 1)
        return pos
    if t == _STRUCT:
        return _struct(buf, pos, (), depth + 1)[1]
    raise ValueError(f"unknown thrift compact type {t}")


def _struct(buf, pos: int, keep: tuple = (), depth: int = 0, nested: tuple = ()) -> tuple[dict, int]:
    """Fields `keep` (i32 values) of the struct at pos, the i32 field 1 of its `nested` struct fields, and
    the position after it."""
    fields, fid = {}, 0
    while True:
        head = buf[pos]
        pos += 1
        if head == _STOP:
            return fields, pos
        t, delta = head & 0x0F, head >> 4
        if delta:
            fid += delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _zigzag(raw)
        if fid in keep and t == _I32:
            raw, pos = _varint(buf, pos)
            fields[fid] = _zigzag(raw)
        elif fid in nested and t == _STRUCT:
            fields[fid], pos = _struct(buf, pos, (1,), depth + 1)
        else:
            pos = _skip(buf, pos, t, False, depth)


CHUNK_IN_MEMORY = 8 << 20   # a column chunk up to this size is read at once, a larger one page by page
_HEADER_BYTES = 64 << 10    # a page header is a few dozen bytes; more than this is not a header
_BLOCK = 1 << 20


class PagesDisagree(ValueError):
    """A column chunk's pages hold another number of values than the footer says (pyarrow and DuckDB
    trust the footer: a chunk claiming 2**40 values made DuckDB fail on every query reading it, and
    pyarrow read it as if nothing were wrong)."""


def pages_match(path, md: pq.FileMetaData | None = None) -> bool | None:
    """True: every page carries a CRC and all match. False: a page's CRC does not match. None: cannot
    tell (no checksums, a layout this walk does not know, a header that does not parse). Raises
    PagesDisagree when the pages tile a chunk but hold another number of values than its footer
    says. `path` may be an open binary file (read through that one handle). Memory: one column chunk
    up to CHUNK_IN_MEMORY, else one page header and a 1 MiB block at a time, whatever the file's size."""
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        with open(path, "rb") as f:
            return pages_match(f, md)
    f = path
    md = md or pq.read_metadata(f)
    size = f.seek(0, 2)
    answer = True
    try:
        for rg in range(md.num_row_groups):
            group = md.row_group(rg)
            for i in range(group.num_columns):
                ok = _chunk_matches(f, size, group.column(i))
                if ok is False:
                    return False
                answer = answer and ok  # None (no checksums here): keep walking, the counts still count
    except PagesDisagree:
        raise
    except (IndexError, ValueError):
        return None
    return answer


def _chunk_matches(f, size: int, col) -> bool | None:
    start = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else \
        col.data_page_offset
    end = start + col.total_compressed_size
    if start < 0 or end > size or end < start:
        return None
    if end - start <= CHUNK_IN_MEMORY:
        f.seek(start)
        buf = memoryview(f.read(end - start))
        return _pages_in_memory(buf, len(buf), col.num_values) if len(buf) == end - start else None
    pos, values, checked = start, 0, True
    while pos < end:
        f.seek(pos)
        head = memoryview(f.read(min(_HEADER_BYTES, end - pos)))
        page, crc, n, used = _page_header(head, 0)
        pos += used
        if page is None or page < 0 or pos + page > end:
            return None
        values += n
        if crc is None:
            checked = False
        elif _crc_of(f, pos, page) != crc & 0xFFFFFFFF:
            return False
        pos += page
    return _tiled(pos == end, values, col.num_values, checked)


def _pages_in_memory(buf, end: int, expected: int) -> bool | None:
    pos, values, checked = 0, 0, True
    while pos < end:
        page, crc, n, pos = _page_header(buf, pos)
        if page is None or page < 0 or pos + page > end:
            return None
        values += n
        if crc is None:
            checked = False
        elif zlib.crc32(buf[pos:pos + page]) != crc & 0xFFFFFFFF:
            return False
        pos += page
    return _tiled(pos == end, values, expected, checked)


def _page_header(buf, pos: int) -> tuple:
    """(compressed size, crc, values of a data page (0 for other pages), position after the header)."""
    header, pos = _struct(buf, pos, keep=(3, 4), nested=(5, 8))  # 5: DataPageHeader, 8: DataPageHeaderV2
    return header.get(3), header.get(4), header.get(5, header.get(8, {})).get(1, 0), pos


def _tiled(exact: bool, values: int, expected: int, checked: bool) -> bool | None:
    """The chunk's answer once its pages are walked: None when they did not tile it exactly."""
    if not exact:
        return None
    if values != expected:
        raise PagesDisagree(f"its pages hold {values} values where its footer says {expected}: not read")
    return True if checked else None


def _crc_of(f, pos: int, n: int) -> int:
    f.seek(pos)
    crc = 0
    while n > 0:
        block = f.read(min(_BLOCK, n))
        if not block:
            raise ValueError("file shorter than its footer says")
        crc, n = zlib.crc32(block, crc), n - len(block)
    return crc
