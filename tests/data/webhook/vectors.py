#!/usr/bin/env python3
"""Print the expected X-CipherStream-Signature of every body in this directory.

An independent implementation (Python's hmac module) of SPEC section 2: HMAC-SHA256 over the
exact file bytes, keyed with the secret's UTF-8 bytes. tests/webhook.rs hard-codes this output.
Run: python3 tests/data/webhook/vectors.py
"""
import calendar
import hashlib
import hmac
import pathlib
import time

SECRET_NEW = "whsec_7f3c9a1e5b2d4068"  # the secret the bodies are signed with
SECRET_OLD = "whsec_old_2f8e1c7a"  # a rotated-out secret that matches nothing

here = pathlib.Path(__file__).parent
for path in sorted(here.iterdir()):
    if path.suffix in (".json", ".txt"):
        mac = hmac.new(SECRET_NEW.encode("utf-8"), path.read_bytes(), hashlib.sha256)
        print(f"{path.name}: sha256={mac.hexdigest()}")
ts = calendar.timegm(time.strptime("2024-09-26T10:02:15Z", "%Y-%m-%dT%H:%M:%SZ"))
print(f"completed.json timestamp: {ts}")
