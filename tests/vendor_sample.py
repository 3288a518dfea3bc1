#!/usr/bin/env python3
"""The vendor's reference decryption, as its documentation gives it (shared/seed/, "Python").

Adapted only to take the export, the key file and the customer id from the command line, and to
print each decrypted record as compact JSON, one per line:

    python3 tests/vendor_sample.py EXPORT.zip KEY_FILE CUSTOMER_ID

Everything between the two "vendor" markers is the documented sample, unchanged apart from the
two pre-shared values. The steps around it follow the documented "Decryption steps": unzip to get
job_id.ndjson, read the file line by line, parse the JSON, get encrypted_data, decrypt with
row_index counting from 0.
"""

import json
import sys
import zipfile

export_path, key_path, customer_id_arg = sys.argv[1:4]
with open(key_path) as key_file:
    key_b64 = key_file.read().strip()

# ---- vendor: begin ----
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import base64
import json

# Your pre-shared values
derived_key_base64 = key_b64
customer_id = customer_id_arg

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
# ---- vendor: end ----

# "Unzip to get job_id.ndjson": the ZIP holds a single .ndjson file.
with zipfile.ZipFile(export_path) as archive:
    (member,) = archive.namelist()
    with archive.open(member) as ndjson:
        # "Read file line by line", "Parse JSON; get encrypted_data".
        for row_index, line in enumerate(ndjson):
            record = decrypt_line(json.loads(line)["encrypted_data"], row_index)
            print(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
