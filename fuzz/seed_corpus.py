#!/usr/bin/env python3
"""Make the seed corpora of the fuzz targets, at fuzz time, from the repository's test vectors.

Writes into fuzz/corpus/<target>/ (git-ignored; libFuzzer adds what it finds beside the seeds):
  container, export: every file of fixtures/vectors as it is, plus small hand-made ZIPs whose
                     headers lie about sizes, counts and offsets (made here, not kept in git);
  line:              every distinct non-blank line of every vector (unwrapped from gzip/ZIP),
                     plus a few JSON plaintexts (the `line` target also seals its input as one);
  roundtrip:         scripts for the roundtrip target (see checks/roundtrip.rs): the same
                     plaintexts under each combination of BOM, CRLF, final newline and gzip;
  json:              the same JSON plaintexts, and a few documents at the grammar's corners;
  inflate:           every ZIP and gzip vector as it is, and the NDJSON of each vector to be
                     compressed and damaged by the target (see checks/inflate.rs: the first byte
                     picks the mode and the read size).
Seeds are rewritten on every run; the fixtures themselves are never duplicated in git.
Standard library only.
"""

import gzip
import hashlib
import io
import struct
import sys
import zipfile
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
VECTORS = FUZZ.parent / "fixtures" / "vectors"
CORPUS = FUZZ / "corpus"
LINE_MAX = 64 * 1024  # longer lines (the 1 MiB-row vector) only slow the `line` target


def ndjson_of(path: Path) -> list[bytes]:
    """The NDJSON bytes inside a vector, as well as Python can get at them (partial if broken)."""
    raw = path.read_bytes()
    if raw.startswith(b"PK"):
        out = []
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for info in z.infolist():
                    try:
                        out.append(z.read(info))
                    except Exception:
                        pass
        except Exception:
            pass
        return out
    if raw.startswith(b"\x1f\x8b"):
        d = zlib.decompressobj(wbits=31)
        try:
            return [d.decompress(raw)]
        except zlib.error:
            return []
    return [raw]


def zip_bytes(members, *, entries=None, cd_offset=None, cd_size=None, zip64_extra=False):
    """A ZIP built by hand so every header field can lie.

    members: dicts with name, data (the bytes stored), method (0 stored, 8 deflate), and
    optional crc, csize, usize (declared in both headers), local_csize/local_usize (local header
    only), flags.
    """
    body = b""
    central = b""
    for m in members:
        name = m["name"].encode()
        data = m["data"]
        crc = m.get("crc", 0)
        csize = m.get("csize", len(data))
        usize = m.get("usize", 0)
        flags = m.get("flags", 0)
        offset = len(body)
        lc, lu = m.get("local_csize", csize), m.get("local_usize", usize)
        if zip64_extra:
            lc = lu = 0xFFFFFFFF
        local_extra = struct.pack("<HHQQ", 0x0001, 16, usize, csize) if zip64_extra else b""
        body += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45 if zip64_extra else 20, flags, m["method"], 0, 0x21,
            crc, lc & 0xFFFFFFFF, lu & 0xFFFFFFFF, len(name), len(local_extra),
        ) + name + local_extra + data
        extra = b""
        c32, u32 = csize, usize
        if zip64_extra:
            extra = struct.pack("<HHQQ", 0x0001, 16, usize, csize)
            c32 = u32 = 0xFFFFFFFF
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 45 if zip64_extra else 20, flags,
            m["method"], 0, 0x21, crc, c32 & 0xFFFFFFFF, u32 & 0xFFFFFFFF, len(name), len(extra),
            0, 0, 0, 0, offset,
        ) + name + extra
    n = len(members) if entries is None else entries
    eocd = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, n, n,
        len(central) if cd_size is None else cd_size,
        len(body) if cd_offset is None else cd_offset, 0,
    )
    return body + central + eocd


def lying_zips(ndjson: bytes) -> dict[str, bytes]:
    """ZIPs around a real export whose headers lie about sizes, counts and offsets."""
    crc = zlib.crc32(ndjson)
    c = zlib.compressobj(wbits=-15)
    deflated = c.compress(ndjson) + c.flush()
    n = len(ndjson)

    def stored(**kw):
        return dict(name="export.ndjson", data=ndjson, method=0, crc=crc, csize=n, usize=n) | kw

    def deflate(**kw):
        return dict(name="export.ndjson", data=deflated, method=8, crc=crc,
                    csize=len(deflated), usize=n) | kw

    return {
        "honest-stored": zip_bytes([stored()]),
        "honest-deflate": zip_bytes([deflate()]),
        "stored-sizes-too-small": zip_bytes([stored(csize=16, usize=16)]),
        "stored-sizes-huge": zip_bytes([stored(csize=0x7FFFFFFF, usize=0x7FFFFFFF)]),
        "deflate-usize-too-small": zip_bytes([deflate(usize=100)]),
        "deflate-usize-huge": zip_bytes([deflate(usize=0xFFFFFFF0)]),
        "deflate-csize-too-small": zip_bytes([deflate(csize=10)]),
        "deflate-usize-zero": zip_bytes([deflate(usize=0)]),
        "local-sizes-differ-from-central": zip_bytes([stored(local_csize=5, local_usize=5)]),
        "data-descriptor-flag-no-descriptor": zip_bytes(
            [deflate(flags=0x08, local_csize=0, local_usize=0)]
        ),
        "eocd-claims-65535-entries": zip_bytes([stored()], entries=0xFFFF),
        "eocd-claims-no-entries": zip_bytes([stored()], entries=0),
        "cd-offset-past-end": zip_bytes([stored()], cd_offset=0x7FFFFFF0),
        "cd-size-huge": zip_bytes([stored()], cd_size=0x7FFFFFF0),
        "zip64-extra-sizes-huge": zip_bytes(
            [stored(csize=1 << 62, usize=1 << 62)], zip64_extra=True
        ),
        "zip64-extra-honest": zip_bytes([deflate()], zip64_extra=True),
        "two-members-ndjson-lies": zip_bytes(
            [dict(name="README.txt", data=b"hello\n", method=0, crc=zlib.crc32(b"hello\n"),
                  csize=6, usize=6),
             deflate(usize=7)]
        ),
    }


PLAINTEXTS = [
    b'{"id":1,"name":"A"}',
    b'{\n  "a b": "x\\" \\n y",\r\n  "n": [1, 2.5e-3, -0, true, false, null]\n}\n',
    b'[\r\n{"k":"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},\n"\\u2028\\ud83d\\ude00"\n]',
    b' \n"str\\\\"\n ',
    b'{"nested":{"deep":[[[[{}]]]]},\n"dup":1,"dup":2}',
    b"1e400\n",
    b'"\xff"',
]


# Extra seeds for the `json` target: escapes, surrogates, numbers, nesting, and near misses.
JSON_SEEDS = [
    b'{"record_type":"appointment","patient":{"id":"pat_demo_101","name":"Zo\xc3\xab"},'
    b'"fee":95.00,"tooth":null,"refunded":false,"ok":true,"items":[1,-0.5e-3,2E+10]}',
    b'"\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD800 \\udc00"',
    b'[0,-0,1.5,-1.25E-10,123456789012345678901234567890,1e400]',
    b"[" * 200 + b"]" * 200,
    b'{"a":{"b":[{"c":[]}]}}',
    b'[01]',
    b'{"a":1,}',
    b'"\\u12G4"',
    b'"\x1f"',
    b'"\x7f"',
    b" \t\r\n[ true , false , null ] \n",
]


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main() -> int:
    vectors = sorted(p for p in VECTORS.iterdir() if p.is_file())
    if not vectors:
        print(f"no vectors in {VECTORS}", file=sys.stderr)
        return 1
    lines = set()
    for p in vectors:
        for target in ("container", "export"):
            write(target, f"vector-{p.name}", p.read_bytes())
        for ndjson in ndjson_of(p):
            for line in ndjson.split(b"\n"):
                if line.strip() and len(line) <= LINE_MAX:
                    lines.add(line)
        raw = p.read_bytes()
        if raw.startswith((b"PK", b"\x1f\x8b")):
            # 132: the file as it is, read 4096 bytes at a time.
            write("inflate", f"vector-{p.name}", bytes([132]) + raw)
        for i, ndjson in enumerate(ndjson_of(p)):
            if len(ndjson) <= 60_000:
                # 129, 130, 131: one gzip member, two, a ZIP member; read 4096 at a time.
                for mode in (129, 130, 131):
                    write("inflate", f"ndjson-{mode}-{i}-{p.name}", bytes([mode]) + ndjson)
    base = next(z for p in vectors if p.name == "zip_stored.zip" for z in ndjson_of(p))
    zips = lying_zips(base)
    for name, data in zips.items():
        for target in ("container", "export"):
            write(target, f"zip-{name}.zip", data)
    for line in sorted(lines):
        write("line", "line-" + hashlib.sha1(line).hexdigest()[:16], line)
    for i, pt in enumerate(PLAINTEXTS):
        write("line", f"plaintext-{i}", pt)
        write("json", f"plaintext-{i}", pt)
    for i, doc in enumerate(JSON_SEEDS):
        write("json", f"seed-{i}", doc)
    good = [p for p in PLAINTEXTS if b"\xff" not in p and p != b"1e400\n"]
    for flags in range(16):
        # max_line_bytes 4 KiB, or 256 MiB (the CLI's default); the list repeated 1 or 60 times
        # (past the 256 KiB buffer); record control bytes: plain, blank line before, whitespace
        # line before, 8 KiB of padding.
        for max_line in (4096, 256 << 20):
            for repeat in (0, 59):
                records = b"\0".join(
                    bytes([ctrl]) + p for ctrl, p in zip((0, 1, 2, 4, 0, 3), good))
                write("roundtrip", f"script-{flags:02d}-{max_line}-{repeat + 1}",
                      bytes([flags]) + struct.pack("<IB", max_line, repeat) + records)
    write("roundtrip", "script-bad-row", b"\x00" + struct.pack("<IB", 4096, 0) + b"\0".join(
        b"\x00" + p for p in PLAINTEXTS))
    print(f"seeds: {len(vectors)} vectors and {len(zips)} hand-made ZIPs for container and export; "
          f"{len(lines)} lines and {len(PLAINTEXTS)} plaintexts for line; 65 scripts for roundtrip; "
          f"{len(PLAINTEXTS) + len(JSON_SEEDS)} documents for json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
