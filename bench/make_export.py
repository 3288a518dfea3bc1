#!/usr/bin/env python3
"""Generate realistic, deterministic CipherStream exports for the benchmark (issue 3).

Independent of the Rust code: rows are sealed with Python `cryptography` exactly as the vendor
describes (AES-256-GCM, 12-byte nonce, blob = ciphertext || 16-byte tag, AAD =
`stream:{customer_id}:{row_index}`), so the benchmark also cross-checks the implementation.

    python3 bench/make_export.py --rows 1000000 --out bench/work/rows_1000000
    python3 bench/make_export.py --huge-mib 40 --out bench/work/huge_40mib

A `--rows` directory gets:
    export.zip          deflated ZIP (zlib level 6, Python's default) holding `<job_id>.ndjson`
    export.ndjson       the same NDJSON, plain
    export.ndjson.gz    the same NDJSON, gzip (level 6)
    customer.key        the base64 key, one line
    customer_id.txt     the customer id, one line
    meta.json           rows, sizes, job id, and the SHA-256 of the expected decrypted output
                        (every plaintext followed by `\\n`), so a run can be checked for correctness

A `--huge-mib M` directory holds the same files for an export with 1,000 ordinary rows, then one
row whose plaintext is M MiB (a patient record with an embedded base64 X-ray), then 1,000 more.

Records are ordinary fake dental-practice data (appointments, patients, payments, treatments),
single-line UTF-8 JSON of about 410 bytes on average, drawn from `random.Random(seed)`. For 1M
rows that is ~413 MB of plaintext, ~630 MB of NDJSON and ~450 MB of ZIP (base64 of ciphertext
barely compresses: deflate gets it to ~75% at best).

Determinism and speed: one AESGCM object seals every row (the vendor would do the same), and the
nonces are the AES-256-CTR keystream of a key derived from the seed, cut into 12-byte pieces.
That is deterministic and independent of the OS, and unique with overwhelming probability, which
is all a benchmark needs. A real sender must draw its nonces from a CSPRNG (as `cipherstream
encrypt` does) or use a counter; these files are test data, never real exports. ZIP timestamps
and the gzip header are fixed, so the output is byte-identical for a given Python and zlib.
Requires Python >= 3.9 and `cryptography` (fixtures/requirements.txt).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import random
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEFAULT_SEED = "cipherstream-bench-v1"
CUSTOMER_ID = "cust_7d31e09b"
KEY_ID = "ck_live_2025_10"
ZIP_DATE_TIME = (2025, 10, 1, 2, 0, 0)
LEVEL = 6
BATCH = 20_000


def derive(seed: str, label: str, n: int = 32) -> bytes:
    return hashlib.sha256(f"{seed}\0{label}".encode()).digest()[:n]


def keystream(seed: str, label: str):
    """An AES-256-CTR keystream keyed from (seed, label): fast deterministic bytes."""
    enc = Cipher(algorithms.AES(derive(seed, "ks-key:" + label)),
                 modes.CTR(derive(seed, "ks-iv:" + label, 16))).encryptor()
    return lambda n: enc.update(bytes(n))


# --------------------------------------------------------------------------- records

GIVEN = ["Zoë", "Mateo", "Aiko", "Oluwaseun", "Siobhán", "Lukas", "Priya", "Émile", "Noah", "Olivia",
         "Liam", "Amelia", "Jack", "Isla", "Oliver", "Ava", "Hamish", "Mia", "Freya", "Sebastián",
         "Chloé", "Ingrid", "Tomasz", "Fatima", "Mohammed", "Grace", "Chen", "Yuki", "Ana", "Kwame"]
FAMILY = ["Ólafsdóttir", "García", "Tanaka", "Adeyemi", "Ní Bhriain", "Nowak", "Raghunathan",
          "Fournier", "Smith", "Jones", "Williams", "Brown", "Taylor", "Müller", "O'Connor", "Rossi",
          "Kowalski", "Nguyen", "Haddad", "Papadopoulos", "Johansson", "Silva", "Murphy", "Kelly",
          "Walsh", "Byrne", "Dubois", "Schmidt", "Andersen", "Okafor"]
PROVIDERS = [("prov_017", "Dr. Amélie Dubois", "dentist"), ("prov_022", "Dr. Siobhán Ní Bhriain", "hygienist"),
             ("prov_031", "Dr. Mateo Ruiz", "orthodontist"), ("prov_044", "Dr. Hannah Weiß", "dentist"),
             ("prov_052", "Dr. Kofi Mensah", "oral_surgeon"), ("prov_060", "Dr. Emma Clarke", "dentist")]
PROCEDURES = [("D0120", "Periodic oral evaluation", "55.00"), ("D0150", "Comprehensive oral evaluation", "95.00"),
              ("D0220", "Periapical radiograph", "28.00"), ("D0274", "Bitewings – four films", "68.00"),
              ("D1110", "Prophylaxis – adult", "120.50"), ("D1120", "Prophylaxis – child", "80.00"),
              ("D1206", "Fluoride varnish", "42.00"), ("D2140", "Amalgam – one surface", "110.00"),
              ("D2392", "Resin composite, two surfaces", "185.00"), ("D2740", "Crown – porcelain/ceramic", "980.00"),
              ("D3330", "Endodontic therapy, molar", "1150.00"), ("D7140", "Extraction, erupted tooth", "210.00"),
              ("D8660", "Pre-orthodontic visit", "150.00"), ("D9110", "Palliative treatment", "95.00")]
STATUSES = ["completed", "completed", "completed", "confirmed", "confirmed", "cancelled", "no_show", "rescheduled"]
NOTES = [None, None, None, "Sensitive upper left quadrant.", "Prefers morning slots (before 10:00).",
         "Left voicemail; rebook requested.", "Anxious patient – allow extra time.", "Guardian present.",
         "50% deposit; balance due at fit.", "Bleeding on probing, lower anterior.", "Reminder sent by SMS."]
CLINICS = [{"id": "clinic_dub_01", "name": "Brightsmile Dental Dublin", "timezone": "Europe/Dublin"},
           {"id": "clinic_cork_02", "name": "Brightsmile Dental Cork", "timezone": "Europe/Dublin"},
           {"id": "clinic_lon_03", "name": "Harbour Dental Clinic", "timezone": "Europe/London"}]
INSURERS = ["Laya Healthcare", "Irish Life Health", "VHI Dental", "Delta Dental", "Bupa Dental", None, None]
CURRENCIES = ["EUR", "EUR", "EUR", "GBP"]
METHODS = ["card", "card", "card", "cash", "insurance", "bank_transfer"]
BRANDS = ["visa", "mastercard", "amex"]


def stamp(r: random.Random) -> str:
    return (f"2025-{r.randint(1, 9):02d}-{r.randint(1, 28):02d}T"
            f"{r.randint(8, 17):02d}:{r.choice(('00', '15', '30', '45'))}:00+01:00")


def money(x: float) -> float:
    return round(x, 2)


def record(r: random.Random, i: int) -> dict:
    kind = r.random()
    pid = f"pat_{r.randrange(16**6):06x}"
    if kind < 0.40:
        prov = r.choice(PROVIDERS)
        procs = [{"code": c, "description": d, "fee": float(f), "tooth": r.choice((None, r.randint(11, 48)))}
                 for (c, d, f) in r.sample(PROCEDURES, r.choice((0, 1, 1, 2, 2, 3)))]
        return {"record_type": "appointment", "appointment_id": f"apt_{i:09d}", "clinic_id": r.choice(CLINICS)["id"],
                "patient": {"id": pid, "name": f"{r.choice(GIVEN)} {r.choice(FAMILY)}"},
                "provider": {"id": prov[0], "name": prov[1], "role": prov[2]}, "room": r.randint(1, 6),
                "start": stamp(r), "duration_minutes": r.choice((15, 20, 30, 45, 60, 90)),
                "status": r.choice(STATUSES), "procedures": procs, "notes": r.choice(NOTES)}
    if kind < 0.65:
        g, f = r.choice(GIVEN), r.choice(FAMILY)
        ins = r.choice(INSURERS)
        return {"record_type": "patient", "patient_id": pid, "name": {"given": g, "family": f},
                "date_of_birth": f"{r.randint(1935, 2020)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                "email": f"{g.lower()}.{f.lower().replace(' ', '')}{r.randint(1, 999)}@example.com",
                "phone": f"+353 8{r.randint(3, 9)} {r.randint(100, 999)} {r.randint(1000, 9999)}",
                "address": {"line1": f"{r.randint(1, 250)} {r.choice(FAMILY)} Street", "city": r.choice(("Dublin", "Cork", "Galway", "London")),
                            "postcode": f"D{r.randint(1, 24):02d} X{r.randint(100, 999)}"},
                "insurance": None if ins is None else {"provider": ins, "member_no": f"M-{r.randrange(10**9):09d}"},
                "recall_due": f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                "created_at": stamp(r)}
    if kind < 0.90:
        amount = money(r.uniform(20, 1200))
        method = r.choice(METHODS)
        return {"record_type": "payment", "payment_id": f"pay_{r.randrange(36**9):x}", "appointment_id": f"apt_{r.randrange(i + 1):09d}",
                "patient_id": pid, "amount": amount, "currency": r.choice(CURRENCIES), "method": method,
                "card": {"brand": r.choice(BRANDS), "last4": f"{r.randrange(10**4):04d}", "exp": f"{r.randint(1, 12):02d}/{r.randint(26, 31)}"} if method == "card" else None,
                "allocations": [{"invoice_id": f"inv_{r.randrange(10**7):07d}", "amount": amount}],
                "paid_at": stamp(r), "refunded": r.random() < 0.03,
                "receipt_url": f"https://billing.example.com/r/{r.randrange(16**10):010x}"}
    prov = r.choice(PROVIDERS)
    items = [{"tooth": r.randint(11, 48), "code": c, "description": d, "fee": float(f), "status": r.choice(("proposed", "accepted", "done"))}
             for (c, d, f) in r.sample(PROCEDURES, r.choice((1, 2, 3)))]
    return {"record_type": "treatment", "treatment_id": f"trt_{i:09d}", "patient_id": pid,
            "provider": {"id": prov[0], "name": prov[1]}, "items": items,
            "total": money(sum(it["fee"] for it in items)), "created_at": stamp(r)}


def plaintext(r: random.Random, i: int) -> bytes:
    return json.dumps(record(r, i), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- writing


class Sealer:
    """Seals rows in the vendor's line format and feeds the plain file and the output hash."""

    def __init__(self, seed: str, key: bytes, out: Path):
        self.aead = AESGCM(key)
        self.nonces = keystream(seed, "nonces")
        self.prefix = b'{"encrypted_data":"' + KEY_ID.encode() + b":"
        self.aad_prefix = f"stream:{CUSTOMER_ID}:".encode()
        self.plain = open(out, "wb")
        self.sha = hashlib.sha256()
        self.rows = 0
        self.plain_bytes = 0
        self.max_line = 0

    def seal(self, pts: list[bytes]) -> None:
        nonces = self.nonces(12 * len(pts))
        b64 = base64.b64encode
        enc = self.aead.encrypt
        lines = []
        for j, pt in enumerate(pts):
            nonce = nonces[12 * j:12 * j + 12]
            blob = enc(nonce, pt, self.aad_prefix + str(self.rows + j).encode())
            lines.append(b"".join((self.prefix, b64(nonce), b":", b64(blob), b'"}\n')))
            self.sha.update(pt)
            self.sha.update(b"\n")
            self.plain_bytes += len(pt) + 1
        self.max_line = max(self.max_line, max(len(x) for x in lines))
        self.rows += len(pts)
        self.plain.write(b"".join(lines))

    def close(self) -> None:
        self.plain.close()


def compress(ndjson: Path, out_dir: Path, job_id: str) -> None:
    """Write the ZIP and the gzip variant concurrently (zlib releases the GIL while deflating)."""
    size = ndjson.stat().st_size

    def make_zip() -> None:
        tmp = out_dir / "export.zip.partial"
        zi = zipfile.ZipInfo(f"{job_id}.ndjson", date_time=ZIP_DATE_TIME)
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = 0o644 << 16
        zi.file_size = size  # known in advance: lets zipfile choose zip64 itself
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=LEVEL) as zf:
            with open(ndjson, "rb") as src, zf.open(zi, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(out_dir / "export.zip")

    def make_gzip() -> None:
        tmp = out_dir / "export.ndjson.gz.partial"
        with open(ndjson, "rb") as src, open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=LEVEL) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(out_dir / "export.ndjson.gz")

    t = threading.Thread(target=make_gzip)
    t.start()
    make_zip()
    t.join()


def generate(out_dir: Path, seed: str, rows: int, huge_mib: int | None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("meta.json", "export.zip", "export.ndjson.gz"):
        (out_dir / stale).unlink(missing_ok=True)
    started = time.time()
    key = derive(seed, "customer-key")
    key_path = out_dir / "customer.key"
    key_path.write_text(base64.b64encode(key).decode() + "\n")
    key_path.chmod(0o600)  # cipherstream warns about group/world-readable key files
    (out_dir / "customer_id.txt").write_text(CUSTOMER_ID + "\n")
    job_id = f"appointments_{1759284000000 + rows + (huge_mib or 0)}_{derive(seed, f'job:{rows}:{huge_mib}', 4).hex()}"
    r = random.Random(f"{seed}:records")
    sealer = Sealer(seed, key, out_dir / "export.ndjson")
    i = 0
    if huge_mib is None:
        while i < rows:
            n = min(BATCH, rows - i)
            sealer.seal([plaintext(r, i + k) for k in range(n)])
            i += n
    else:
        sealer.seal([plaintext(r, k) for k in range(1000)])
        xray = keystream(seed, "xray")(huge_mib * 1024 * 1024 * 3 // 4)
        doc = {"record_type": "imaging", "image_id": "img_000001", "patient_id": "pat_8c2e41",
               "modality": "panoramic_xray", "taken_at": "2025-09-26T09:41:00+01:00",
               "attachment": {"content_type": "image/jpeg", "encoding": "base64", "data": "@@DATA@@"}}
        head, tail = json.dumps(doc, separators=(",", ":")).encode().split(b"@@DATA@@")
        big = head + base64.b64encode(xray) + tail
        sealer.seal([big])
        del big, xray
        sealer.seal([plaintext(r, 1001 + k) for k in range(1000)])
    sealer.close()
    compress(out_dir / "export.ndjson", out_dir, job_id)
    meta = {
        "generator": "bench/make_export.py",
        "seed": seed,
        "rows": sealer.rows,
        "huge_row_plaintext_mib": huge_mib,
        "longest_line_bytes": sealer.max_line,
        "customer_id": CUSTOMER_ID,
        "key_id": KEY_ID,
        "job_id": job_id,
        "member": f"{job_id}.ndjson",
        "plaintext_bytes": sealer.plain_bytes,
        "expected_output_sha256": sealer.sha.hexdigest(),
        "sizes": {name: (out_dir / name).stat().st_size
                  for name in ("export.zip", "export.ndjson", "export.ndjson.gz")},
        "python": sys.version.split()[0],
        "seconds": round(time.time() - started, 1),
    }
    # meta.json is written last: its presence means the directory is complete.
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--rows", type=int, help="rows of ordinary records")
    what.add_argument("--huge-mib", type=int, help="one row with this many MiB of plaintext, between 2x1000 ordinary rows")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", default=DEFAULT_SEED)
    a = p.parse_args()
    meta = generate(a.out, a.seed, a.rows or 0, a.huge_mib)
    s = meta["sizes"]
    print(f"{a.out}: {meta['rows']} rows, plaintext {meta['plaintext_bytes'] / 1e6:.1f} MB, "
          f"ndjson {s['export.ndjson'] / 1e6:.1f} MB, zip {s['export.zip'] / 1e6:.1f} MB, "
          f"gzip {s['export.ndjson.gz'] / 1e6:.1f} MB, {meta['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
