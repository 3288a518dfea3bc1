#!/usr/bin/env python3
"""The vendor's Python decryption sample, as a benchmark contender (issue 3).

    python3 bench/vendor_sample.py EXPORT.zip KEY_FILE CUSTOMER_ID_FILE

The block between the VERBATIM markers is the "Reference implementations / Python" sample from the
vendor's documentation page (/work/shared/seed/*.txt), unchanged except for the two marked lines
that read the key and the customer id from files instead of the `{{...}}` placeholders. The loop
below it follows the page's "Decryption steps" literally: unzip to get `<job_id>.ndjson` (streamed
with `zipfile`, never written to disk), read it line by line, parse the JSON, take
`encrypted_data`, call `decrypt_line` with the zero-based row index.

The decrypted records are discarded, not serialised and written as `cipherstream decrypt` does:
that favours Python, so a "cipherstream is N times faster" ratio measured against this is
conservative.
"""

import sys
import zipfile

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
            for row_index, line in enumerate(ndjson):
                decrypt_line(json.loads(line)["encrypted_data"], row_index)
                rows += 1
    print(f"{rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
