#!/usr/bin/env python3
"""Load test of `cipherstream webhook serve` (issue 14, item 8): a burst of signed deliveries,
all sent at once, while jobs run, and the latency of each answer.

What it does, on loopback only:
  1. starts a plain HTTP file server (Python's) serving a ZIP export, rate-limited by nothing:
     the jobs are real downloads and decryptions of `--job-export` (default: the demo fixture);
  2. starts `cipherstream webhook serve` (the release build by default) on 127.0.0.1:0 with a
     fresh state and output directory, and reads the bound address from its first log line;
  3. queues `--jobs-running` job.completed deliveries, so the workers are busy during the burst;
  4. opens `--deliveries` connections at once (one asyncio event loop, every request signed
     beforehand), each sending one signed job.progress delivery with its own delivery id, and
     times each from the connect to the end of the answer;
  5. prints p50, p90, p99 and the maximum, the statuses counted, and PASS or FAIL against the
     issue's target (p99 under 100 ms), as Markdown, to standard output and to `--out`.

Usage: python3 bench/webhook_burst.py [--bin target/release/cipherstream] [--deliveries 1000]
       [--jobs-running 4] [--export-dir bench/work/rows_100000] [--out bench/WEBHOOK.md]
Build first: cargo build --release --locked. The machine is shared: run it when it is quiet, and
report the load average it prints.
"""

import argparse
import asyncio
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo"
SECRET = "whsec_bench_burst"


def rfc3339(t):
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(body):
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def cpu_seconds(pid):
    """User plus system CPU seconds of a process, all its threads."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire(addr, body):
    """The bytes of one signed POST."""
    return (
        f"POST / HTTP/1.1\r\nHost: {addr[0]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-CipherStream-Signature: {sign(body)}\r\n\r\n"
    ).encode() + body


async def timed_request(addr, data):
    """Send `data` on a fresh connection: (status, seconds from connect to the answer's end)."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(data)
        await writer.drain()
        answer = await reader.read()
        writer.close()
    except OSError as e:
        return (f"error: {e.__class__.__name__}", time.perf_counter() - start)
    took = time.perf_counter() - start
    m = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(m.group(1)) if m else "no answer", took)


async def burst(addr, wires, concurrency):
    """Every request, at most `concurrency` connections open at once (a sender's pool)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(w):
        async with slots:
            return await timed_request(addr, w)

    return await asyncio.gather(*(one(w) for w in wires))


def request(addr, body, timeout=60.0):
    """One POST on a fresh connection: (status, seconds from connect to the answer's end)."""
    head = (
        f"POST / HTTP/1.1\r\nHost: {addr[0]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-CipherStream-Signature: {sign(body)}\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(head + body)
            answer = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        return (f"error: {e.__class__.__name__}", time.perf_counter() - start)
    took = time.perf_counter() - start
    m = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(m.group(1)) if m else "no answer", took)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "cipherstream"))
    ap.add_argument("--deliveries", type=int, default=1000)
    ap.add_argument("--jobs-running", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=0,
                    help="connections open at once (a sender's pool); 0: every delivery at once")
    ap.add_argument("--job-export", default=str(DEMO / "appointments_1758630144658_c7511999.zip"))
    ap.add_argument("--export-dir", default=None,
                    help="a bench/make_export.py directory (e.g. bench/work/rows_100000): its "
                         "export, key and customer id for the running jobs, so they are still "
                         "downloading and decrypting during the burst")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.bin = str(pathlib.Path(args.bin).resolve())

    work = pathlib.Path(tempfile.mkdtemp(prefix="cipherstream-burst-"))
    procs = []
    try:
        (work / "out").mkdir()
        (work / "secret").write_text(SECRET + "\n")
        os.chmod(work / "secret", 0o600)
        rows = 8
        if args.export_dir:
            source = pathlib.Path(args.export_dir)
            meta = json.loads((source / "meta.json").read_text())
            key, customer, rows = source / "customer.key", meta["customer_id"], meta["rows"]
            args.job_export = str(source / "export.zip")
        else:
            key, customer = DEMO / "demo.key", (DEMO / "customer_id.txt").read_text().strip()
        shutil.copy(key, work / "key")
        os.chmod(work / "key", 0o600)
        files = work / "files"
        files.mkdir()
        shutil.copy(args.job_export, files / "export.zip")
        export_size = (files / "export.zip").stat().st_size

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(files), **k)

            def log_message(self, *a):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        export_url = f"http://127.0.0.1:{httpd.server_address[1]}/export.zip"

        env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSTREAM_")}
        serve = subprocess.Popen(
            [args.bin, "webhook", "serve", "--listen", "127.0.0.1:0", "--output-dir", "out",
             "--state-dir", "state", "--secret-file", "secret", "--key-file", "key",
             "--customer-id", customer, "--max-connections", str(max(512, args.deliveries + 64))],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        procs.append(serve)
        line = serve.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"the receiver did not start: {line!r}")
        addr = ("127.0.0.1", int(m.group(1)))
        log_lines = []
        threading.Thread(target=lambda: log_lines.extend(serve.stderr), daemon=True).start()

        now = time.time()
        for i in range(args.jobs_running):
            body = json.dumps({
                "event": "job.completed", "timestamp": rfc3339(now), "delivery_id": f"job_{i}",
                "data": {"job_id": f"job_{i}", "customer_id": customer, "rows_processed": rows,
                         "file_size_bytes": export_size, "s3_url": export_url,
                         "expires_at": rfc3339(now + 3600)}}).encode()
            status, _ = request(addr, body)
            if status != 200:
                sys.exit(f"queueing job {i}: {status}")

        load_before = os.getloadavg()
        # Every request is made before the clock starts; then one event loop opens all the
        # connections at once (a thread per connection would measure Python's scheduler more
        # than the receiver: 1,000 threads contend for one interpreter lock).
        now = time.time()
        wires = []
        for i in range(args.deliveries):
            body = json.dumps({"event": "job.progress", "timestamp": rfc3339(now),
                               "delivery_id": f"burst_{i}",
                               "data": {"job_id": "job_0", "customer_id": customer}}).encode()
            wires.append(wire(addr, body))
        cpu_before = cpu_seconds(serve.pid)
        wall = time.perf_counter()
        results = asyncio.run(burst(addr, wires, args.concurrency or args.deliveries))
        wall = time.perf_counter() - wall
        cpu = cpu_seconds(serve.pid) - cpu_before
        load_after = os.getloadavg()

        serve.terminate()
        serve.wait(timeout=30)
        httpd.shutdown()

        latencies = sorted(took for status, took in results if status == 200)
        statuses = {}
        for status, _ in results:
            statuses[status] = statuses.get(status, 0) + 1
        p99 = percentile(latencies, 99)
        ok = statuses.get(200, 0) == args.deliveries and p99 < 0.100
        done = sum(1 for l in log_lines if ": done:" in l)
        report = "\n".join([
            "# webhook serve: a burst of signed deliveries (issue 14, item 8)",
            "",
            "Generated by `bench/webhook_burst.py`; do not edit by hand.",
            "",
            f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Command: `python3 bench/webhook_burst.py --deliveries {args.deliveries} "
            f"--jobs-running {args.jobs_running}"
            f"{' --concurrency ' + str(args.concurrency) if args.concurrency else ''}"
            f"{' --export-dir ' + os.path.relpath(args.export_dir, ROOT) if args.export_dir else ''}`",
            f"- Jobs: each downloads {export_size:,} bytes and decrypts {rows:,} rows",
            f"- Machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, "
            f"after {load_after[0]:.2f}",
            f"- Binary: `{os.path.relpath(args.bin, ROOT)}`",
            f"- Burst: {args.deliveries} signed deliveries, one connection each, "
            f"{str(args.concurrency) + ' open at a time' if args.concurrency else 'all opened at once'}; "
            f"{args.jobs_running} jobs queued just before (jobs done by the stop: {done})",
            f"- Wall time of the burst: {wall:.2f} s; the receiver's CPU time meanwhile: {cpu:.2f} s "
            f"({cpu / args.deliveries * 1e3:.2f} ms a delivery, jobs included)",
            f"- Statuses: {statuses}",
            f"- Latency of the 200s, connect to the end of the answer: "
            f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p90 {percentile(latencies, 90) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000 if latencies else float('nan'):.1f} ms",
            "",
            f"{'PASS' if ok else 'FAIL'}  every delivery answered 200 with p99 under 100 ms",
            "",
        ])
        print(report)
        if args.out:
            pathlib.Path(args.out).write_text(report)
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
