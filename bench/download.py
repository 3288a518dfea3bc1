#!/usr/bin/env python3
"""The download benchmark (issue 13, item 4): `fetch` and `decrypt URL` against a local nginx that
throttles each connection, with curl and aria2 side by side in the same rounds.

    python3 bench/download.py                       # 100k-row export throttled, 1M rows unthrottled
    python3 bench/download.py --rate-mib 4 --rounds 5 --out bench/DOWNLOAD.md

Scenarios, every contender once per round, in an order rotated between rounds:
  1. Throttled download (nginx behind a proxy of ours that paces each connection, like S3 and CDNs): `cipherstream fetch`
     with 1 and 4 connections, `curl -o`, `aria2c` with 1 and 4 connections. Target: fetch with 4
     connections at least 3.5x the throughput of fetch with 1.
  2. Slow link: `decrypt URL` against the same throttled server, its throughput compared with the
     link's (the best downloader's throughput in the same round). Target: at least 0.9x.
  3. Fast link: `decrypt URL` unthrottled against `decrypt FILE` from disk (page cache), 1M rows.
     Target: at least 0.9x the speed of the file (time at most 1/0.9 of it).
Peak RSS (GNU time's %M) of every `decrypt URL` run; target: at most 16 MiB plus the read-ahead
window. Every output is checked once (SHA-256 of the fetched file and of the decrypted rows) before
timing. Needs nginx and aria2 (`apt-get install nginx aria2`), curl, GNU time, and the exports of
bench/make_export.py (made when missing). The server listens on 127.0.0.1 only (plain http, which
cipherstream allows to loopback). A missed target prints FAIL: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground, one process, serving `root`."""

    def __init__(self, root: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="cs-bench-nginx-"))
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""
daemon off; master_process off; worker_processes 1;
pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off; sendfile on; tcp_nopush on;
    client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fcgi; uwsgi_temp_path {self.dir}/uwsgi; scgi_temp_path {self.dir}/scgi;
    types {{ }} default_type application/octet-stream;
    server {{ listen 127.0.0.1:{self.port}; root {root}; }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"download: nginx did not start; see {self.dir}/error.log")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Throttle:
    """A TCP proxy on 127.0.0.1 that paces what the server sends on each connection to `rate`
    bytes a second from that connection's first byte, as S3 and CDNs limit each connection.
    (nginx's own `limit_rate` is per request and lets the first second's worth through at once:
    the 1 MiB ranged requests of a read-ahead would never be throttled at all.)"""

    PIECE = 64 * 1024

    def __init__(self, upstream_port: int, rate: int):
        self.rate, self.upstream = rate, ("127.0.0.1", upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.rate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        start, sent = None, 0
        try:
            while data := src.recv(self.PIECE):
                if rate:
                    start = start or time.monotonic()
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                    sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.listener.close()


def timed(argv: list[str], stdout=subprocess.DEVNULL, env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS in KiB of one run; exits on failure."""
    with tempfile.NamedTemporaryFile(prefix="cs-bench-time-") as t:
        start = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%M", *argv],
                           stdout=stdout, stderr=subprocess.PIPE, env=env)
        wall = time.monotonic() - start
        if r.returncode != 0:
            sys.exit(f"download: {argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
        rss = int(Path(t.name).read_text().split()[-1])
    return wall, rss


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_export(rows: int) -> Path:
    d = ROOT / "bench" / "work" / f"rows_{rows}"
    if not (d / "meta.json").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_export.py"), "--rows", str(rows),
                        "--out", str(d)], check=True)
    return d


def decrypt_argv(cs: str, export: Path, input_: str, connections: int | None) -> list[str]:
    meta = json.loads((export / "meta.json").read_text())
    argv = [cs, "decrypt", "-q", input_, "--customer-id", meta["customer_id"],
            "--key-file", str(export / "customer.key")]
    if connections is not None:
        argv += ["--connections", str(connections)]
    return argv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cs", default=str(ROOT / "target" / "release" / "cipherstream"))
    ap.add_argument("--slow-rows", type=int, default=100_000, help="export for the throttled runs")
    ap.add_argument("--fast-rows", type=int, default=1_000_000, help="export for the unthrottled runs")
    ap.add_argument("--rate-mib", type=float, default=4.0, help="MiB/s per connection when throttled")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "DOWNLOAD.md"))
    ap.add_argument("--command", default="python3 bench/download.py")
    a = ap.parse_args()
    for tool in ("/usr/bin/time", "curl", "aria2c"):
        if not shutil.which(tool):
            sys.exit(f"download: {tool} is required (apt-get install time curl aria2)")
    if not Path(a.cs).exists():
        sys.exit(f"download: {a.cs} is missing: cargo build --release --locked")
    cs, n = a.cs, a.connections
    slow, fast = make_export(a.slow_rows), make_export(a.fast_rows)
    slow_meta = json.loads((slow / "meta.json").read_text())
    fast_meta = json.loads((fast / "meta.json").read_text())
    rate = int(a.rate_mib * MIB)
    scratch = Path(tempfile.mkdtemp(prefix="cs-bench-dl-", dir=ROOT / "bench" / "work"))
    behind, open_ = Nginx(slow), Nginx(fast)
    throttled = Throttle(behind.port, rate)
    load_start = os.getloadavg()
    try:
        zip_slow, zip_fast = throttled.url("export.zip"), open_.url("export.zip")
        out = scratch / "fetched.zip"

        def fetcher(argv_of):
            def run():
                for p in scratch.glob("*"):
                    p.unlink()
                return timed(argv_of(out))
            return run

        downloads = {
            "cipherstream fetch, 1 connection": fetcher(lambda o: [cs, "fetch", "-q", "--connections", "1", zip_slow, "-o", str(o)]),
            f"cipherstream fetch, {n} connections": fetcher(lambda o: [cs, "fetch", "-q", "--connections", str(n), zip_slow, "-o", str(o)]),
            "curl": fetcher(lambda o: ["curl", "-sS", "--fail", "-o", str(o), zip_slow]),
            "aria2c, 1 connection": fetcher(lambda o: ["aria2c", "-q", "--allow-overwrite=true", "-x1", "-s1", "-d", str(o.parent), "-o", o.name, zip_slow]),
            f"aria2c, {n} connections": fetcher(lambda o: ["aria2c", "-q", "--allow-overwrite=true", f"-x{n}", f"-s{n}", "-k1M", "-d", str(o.parent), "-o", o.name, zip_slow]),
        }
        decrypts = {
            "decrypt URL, throttled": lambda: timed(decrypt_argv(cs, slow, zip_slow, n)),
            "decrypt URL, unthrottled": lambda: timed(decrypt_argv(cs, fast, zip_fast, n)),
            "decrypt URL, unthrottled, 1 connection (no read-ahead)": lambda: timed(decrypt_argv(cs, fast, zip_fast, 1)),
            "decrypt FILE (page cache)": lambda: timed(decrypt_argv(cs, fast, str(fast / "export.zip"), None)),
        }
        # Correctness first, untimed: every downloader's bytes, and decrypt URL's rows.
        want = sha256_file(slow / "export.zip")
        for name, run in downloads.items():
            run()
            got = sha256_file(out)
            if got != want:
                sys.exit(f"download: {name} fetched different bytes ({got} != {want})")
        for export, url, meta in ((slow, zip_slow, slow_meta), (fast, zip_fast, fast_meta)):
            p = subprocess.run(decrypt_argv(cs, export, url, n), stdout=subprocess.PIPE, check=True)
            if hashlib.sha256(p.stdout).hexdigest() != meta["expected_output_sha256"]:
                sys.exit(f"download: decrypt {url} gave different rows")
        print("download: all outputs checked", file=sys.stderr)

        contenders = {**downloads, **decrypts}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        rss: dict[str, int] = {k: 0 for k in contenders}
        ratios: dict[str, list[float]] = {"fetch4/fetch1": [], "url/link": [], "url/file": []}
        names = list(contenders)
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            this: dict[str, float] = {}
            for name in order:
                if name == "decrypt FILE (page cache)":
                    subprocess.run(["cat", str(fast / "export.zip")], stdout=subprocess.DEVNULL)
                wall, kib = contenders[name]()
                this[name] = wall
                times[name].append(wall)
                rss[name] = max(rss[name], kib)
                print(f"round {r + 1}: {name}: {wall:.2f} s, {kib / 1024:.1f} MiB", file=sys.stderr)
            link = min(this[k] for k in downloads)
            ratios["fetch4/fetch1"].append(this["cipherstream fetch, 1 connection"] / this[f"cipherstream fetch, {n} connections"])
            ratios["url/link"].append(link / this["decrypt URL, throttled"])
            ratios["url/file"].append(this["decrypt FILE (page cache)"] / this["decrypt URL, unthrottled"])
        load_end = os.getloadavg()
    finally:
        throttled.stop()
        behind.stop()
        open_.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    slow_size = (slow / "export.zip").stat().st_size
    fast_size = (fast / "export.zip").stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    rmed = {k: statistics.median(v) for k, v in ratios.items()}
    lines = [
        "# Download benchmark (issue 13)", "",
        f"Command: `{a.command}`  ",
        f"Machine: {os.cpu_count()} cores; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end.  ",
        f"Throttled server: nginx on 127.0.0.1 behind a proxy that paces each connection to "
        f"{a.rate_mib:g} MiB/s, "
        f"serving the {a.slow_rows:,}-row ZIP export ({slow_size / 1e6:.1f} MB). Unthrottled: the "
        f"{a.fast_rows:,}-row ZIP ({fast_size / 1e6:.1f} MB). {a.rounds} rounds, order rotated; "
        "median wall time, [fastest, slowest]; ratios are medians of same-round ratios. "
        "Every output was checked by SHA-256 before timing.", "",
        "| Contender | Wall s (median [min, max]) | MB/s | Peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for k in contenders:
        size = fast_size if "unthrottled" in k or "FILE" in k else slow_size
        lines.append(f"| {k} | {med[k]:.2f} [{min(times[k]):.2f}, {max(times[k]):.2f}] | "
                     f"{size / med[k] / 1e6:.1f} | {rss[k] / 1024:.1f} |")
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"
    window_mib = 16 + 4
    url_rss = max(rss["decrypt URL, throttled"], rss["decrypt URL, unthrottled"]) / 1024
    ahead_cost = (rss["decrypt URL, unthrottled"] - rss["decrypt URL, unthrottled, 1 connection (no read-ahead)"]) / 1024
    lines += [
        "", "| Target | Measured | |", "|---|---|---|",
        f"| fetch with {n} connections >= 3.5x one connection | {rmed['fetch4/fetch1']:.2f}x | {verdict(rmed['fetch4/fetch1'] >= 3.5)} |",
        f"| decrypt URL on a slow link >= 0.9x the link (best downloader) | {rmed['url/link']:.2f}x | {verdict(rmed['url/link'] >= 0.9)} |",
        f"| decrypt URL on a fast link >= 0.9x decrypt FILE | {rmed['url/file']:.2f}x | {verdict(rmed['url/file'] >= 0.9)} |",
        f"| decrypt URL peak RSS <= 16 MiB + 4 MiB window | {url_rss:.1f} MiB | {verdict(url_rss <= window_mib)} |",
        f"| (read-ahead's own cost: RSS with {n} connections minus with 1) | {ahead_cost:.1f} MiB | |",
        "",
    ]
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
