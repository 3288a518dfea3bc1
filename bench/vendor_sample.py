#!/usr/bin/env python3
"""The vendor's Python decryption sample, as a benchmark contender (issue 3).

    python3 bench/vendor_sample.py [--emit] EXPORT.zip KEY_FILE CUSTOMER_ID_FILE

The block between the VERBATIM markers is the "Reference implementations / Python" sample from the
vendor's documentation page (/work/shared/seed/*.txt), unchanged except for the two marked lines
that read the key and the customer id from files instead of the `{{...}}` placeholders. The loop
below it follows the page's "Decryption steps" literally: unzip to get `<job_id>.ndjson` (streamed
with `zipfile`, never written to disk), read it line by line, parse the JSON, take
`encrypted_data`, call `decrypt_line` with the zero-based row index.

With `--emit` each decrypted record goes back out as a JSON line on stdout (`json.dumps`, compact,
UTF-8): the page's sample plus the one line a user needs to get the same output as
`cipherstream decrypt`. The benchmark checks that this output is byte-identical to the tool's, and
measures the issue's "10x the vendor's Python sample (new AESGCM per line, JSON round trip)"
against it. Without `--emit` the records are discarded after `json.loads`; that does less work
than the tool does and is reported as information only.
"""

import sys
import zipfile

# --emit: write each decrypted record as a JSON line on stdout, as the tool does (see the docstring).
EMIT = "--emit" in sys.argv[1:]
if EMIT:
    sys.argv.remove("--emit")

# ---- VERBATIM (vendor page) -----------------------------------------------------------------
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import base64
import json
# Your pre-shared values
derived_key_base64 = open(sys.argv[2]).read().strip()  # adapted: was "your-pre-shared-key"
customer_id = open(sys.argv[3]).read().strip()  # adapted: was "your-customer-id"
# Decode your key
encryption_key = base64.b64decode(derived_key_base64)
# For each encrypted line (row_index starts at 0)
def decrypt_line(encrypted_data, row_index):
    # Split the encrypted data
    parts = encrypted_data.split(":")
    iv = base64.b64decode(parts[1])
    ciphertext = base64.b64decode(parts[2])
    # Create AAD
    aad = f"stream:{customer_id}:{row_index}".encode('utf-8')
    # Decrypt
    aesgcm = AESGCM(encryption_key)
    decrypted_bytes = aesgcm.decrypt(iv, ciphertext, aad)
    # Parse JSON
    return json.loads(decrypted_bytes.decode('utf-8'))
# ---- END VERBATIM ---------------------------------------------------------------------------


def main() -> int:
    rows = 0
    with zipfile.ZipFile(sys.argv[1]) as zf:
        members = [n for n in zf.namelist() if not n.endswith("/")]
        member = members[0] if len(members) == 1 else next(n for n in members if n.endswith(".ndjson"))
        with zf.open(member) as ndjson:
            if EMIT:
                out = sys.stdout.buffer
                for row_index, line in enumerate(ndjson):
                    record = decrypt_line(json.loads(line)["encrypted_data"], row_index)
                    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
                    out.write(b"\n")
                    rows += 1
            else:
                for row_index, line in enumerate(ndjson):
                    decrypt_line(json.loads(line)["encrypted_data"], row_index)
                    rows += 1
    print(f"{rows} rows", file=sys.stderr if EMIT else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
