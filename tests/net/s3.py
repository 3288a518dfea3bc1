"""S3 client for the network tests (tests/it/net/seaweed.rs): an implementation independent of ours.

boto3 uploads, replaces and deletes objects, makes multipart objects, and signs presigned GET URLs
(SigV4, path-style, the way the vendor's S3 makes them). The test talks to one long-lived process
so that boto3 is imported once per server, not once per call:

    python3 tests/net/s3.py ENDPOINT

reads one JSON request per line on standard input and answers one JSON line on standard output:
`{"ok": {...}}` or `{"error": "..."}`. The access key and secret come from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); throwaway values that the test server is configured to accept.

Requests (`op` and its fields):
- `ready` `bucket` `timeout`: create the bucket and write, read and delete a probe object, retrying
  until the server takes them (it starts in stages) or `timeout` seconds pass.
- `put` `bucket` `key` `path`: upload the file at `path` in one request; answers `etag`, `size`.
- `multipart` `bucket` `key` `path` `part_size`: upload it in parts of `part_size` bytes (S3
  wants at least 5 MiB for every part but the last); answers `etag` (`"...-N"`), `size`, `parts`.
- `head` `bucket` `key`: answers `etag`, `size`.
- `delete` `bucket` `key`.
- `presign` `bucket` `key` `expires_in` [`endpoint`] [`signed_at`]: a presigned GET URL valid for
  `expires_in` seconds, for `endpoint` (default ENDPOINT; the host is signed, so a URL meant to go
  through a proxy must name the proxy), signed as if at `signed_at` (Unix seconds; default now).
  botocore has no parameter for the signing time: the signer's clock
  (`botocore.auth.get_current_datetime`) is replaced for that one call, which is why botocore is
  pinned in requirements.txt.
"""

import datetime
import json
import os
import sys
import time

import boto3
import botocore.auth
import botocore.config
import botocore.exceptions


def client(endpoint):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            # Plain requests, as older clients send them: no aws-chunked bodies or CRC trailers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=20,
        ),
    )


def ready(s3, req):
    deadline = time.monotonic() + req["timeout"]
    bucket = req["bucket"]
    while True:
        try:
            try:
                s3.create_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError as e:
                # Made by an earlier try whose later steps failed.
                code = e.response["Error"]["Code"]
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            s3.put_object(Bucket=bucket, Key=".ready", Body=b"ready")
            body = s3.get_object(Bucket=bucket, Key=".ready")["Body"].read()
            if body != b"ready":
                raise RuntimeError(f"probe object read back as {body!r}")
            s3.delete_object(Bucket=bucket, Key=".ready")
            return {}
        except Exception as e:  # the server answers in stages while it starts
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {req['timeout']} s: {e}") from e
            time.sleep(0.05)


def put(s3, req):
    with open(req["path"], "rb") as f:
        r = s3.put_object(Bucket=req["bucket"], Key=req["key"], Body=f)
    return {"etag": r["ETag"], "size": os.path.getsize(req["path"])}


def multipart(s3, req):
    bucket, key, size = req["bucket"], req["key"], req["part_size"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    with open(req["path"], "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk and parts:
                break
            n = len(parts) + 1
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=chunk)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
            if len(chunk) < size:
                break
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return {"etag": r["ETag"], "size": os.path.getsize(req["path"]), "parts": len(parts)}


def head(s3, req):
    r = s3.head_object(Bucket=req["bucket"], Key=req["key"])
    return {"etag": r["ETag"], "size": r["ContentLength"]}


def delete(s3, req):
    s3.delete_object(Bucket=req["bucket"], Key=req["key"])
    return {}


def presign(s3, req, clients):
    endpoint = req.get("endpoint")
    if endpoint:
        s3 = clients.setdefault(endpoint, client(endpoint))
    params = {"Bucket": req["bucket"], "Key": req["key"]}
    signed_at = req.get("signed_at")
    if signed_at is None:
        url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=req["expires_in"])
        return {"url": url}
    at = datetime.datetime.fromtimestamp(signed_at, datetime.timezone.utc).replace(tzinfo=None)
    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *args, **kwargs: at
    try:
        url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=req["expires_in"])
    finally:
        botocore.auth.get_current_datetime = real
    return {"url": url}


def main():
    endpoint = sys.argv[1]
    s3 = client(endpoint)
    clients = {endpoint: s3}
    ops = {"ready": ready, "put": put, "multipart": multipart, "head": head, "delete": delete}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "presign":
                answer = {"ok": presign(s3, req, clients)}
            else:
                answer = {"ok": ops[req["op"]](s3, req)}
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
