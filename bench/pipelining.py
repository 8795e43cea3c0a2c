"""The delivery engine to a relay a round trip away (a delaying proxy + smtp-sink), vs raw smtplib.

    .venv/bin/python bench/pipelining.py                        # 20 ms RTT, 2 connections
    .venv/bin/python bench/pipelining.py --rtt-ms 50 --connections 4 --subscribers 1000
    .venv/bin/python bench/pipelining.py --no-session           # skip the bare-session line

It starts Postfix's ``smtp-sink`` on a free loopback port and ``bench/rtt_proxy.py`` in front
of it (its own process, so the proxy's event loop does not compete with the senders for the
GIL), then, all through the proxy:

1. **engine**: ``bench/delivery.py``'s phases pointed at the proxy: ``--subscribers``
   subscribers in a temporary SQLite database, a digest of ``--size-kb``, sent by
   ``app.send_now`` exactly as ``newsletter send-now`` runs it (outbox, claims, outcomes
   recorded), pipelined; the rate between the engine's first and last progress report;
2. **raw smtplib**: the same number of messages of the same digest with
   ``smtplib.SMTP.sendmail`` (four round trips per message), one thread and one persistent
   connection per ``--connections``;
3. **session** (unless ``--no-session``): ``SmtpSession`` alone with one digest-sized MIME
   message, connections greeted before the clock starts: the ceiling of the transport.

It prints the rates, the engine's ratio to raw smtplib, the wire limit (connections / RTT: one
message per round trip per connection) and whether the targets of issue #13 hold (at least
2.5x raw smtplib and 80 % of the wire limit).
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.delivery import WORDS, bench_one, free_port, start_sink  # noqa: E402
from newsletter.delivery.pipelining import Accepted, OutgoingMessage, SmtpSession  # noqa: E402

SENDER = "digest@example.org"
TARGET_RATIO = 2.5
TARGET_OF_WIRE = 0.8


def digest_message(size_kb: float) -> bytes:
    """A multipart/alternative digest of about ``size_kb`` KB, as bytes with CRLF line ends."""
    paragraphs: list[str] = []
    data = b""
    while len(data) < size_kb * 1000:
        n = len(paragraphs)
        words = " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(70))
        paragraphs.append(f"{words.capitalize()}, reported on day {n}.")
        message = EmailMessage(policy=SMTP)
        message["From"] = f"The Daily Digest <{SENDER}>"
        message["To"] = "Reader <reader@example.org>"
        message["Subject"] = "The Daily Digest: 26 November 2026"
        message.set_content("\n\n".join(paragraphs), cte="quoted-printable")
        html = "".join(f'<tr><td style="padding:8px">{p}</td></tr>' for p in paragraphs)
        message.add_alternative(
            f'<html><body><table width="600">{html}</table></body></html>',
            subtype="html",
            cte="quoted-printable",
        )
        data = message.as_bytes()
    return data


def start_proxy(upstream_port: int, rtt_ms: float) -> tuple[subprocess.Popen[str], int]:
    """``bench/rtt_proxy.py`` in its own process; returns it and the port it listens on."""
    proxy = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("rtt_proxy.py")),
            "--upstream",
            f"127.0.0.1:{upstream_port}",
            "--rtt-ms",
            str(rtt_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    line = proxy.stdout.readline()  # "listening on PORT", or nothing if it died
    if not line.startswith("listening on "):
        proxy.kill()
        sys.exit("the delaying proxy did not start")
    return proxy, int(line.split()[-1])


Sender = Callable[[smtplib.SMTP, list[OutgoingMessage]], int]


def send_pipelined(client: smtplib.SMTP, messages: list[OutgoingMessage]) -> int:
    session = SmtpSession(client)
    if not session.pipelining:
        sys.exit("the server does not offer PIPELINING")
    return sum(isinstance(outcome, Accepted) for outcome in session.send_all(messages))


def run(sender: Sender, port: int, connections: int, messages: list[OutgoingMessage]) -> float:
    """Messages per second, ``connections`` threads, clock started once all are greeted."""
    shares = [messages[i::connections] for i in range(connections)]
    clients = []
    for _ in range(connections):
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        client.ehlo()
        clients.append(client)
    accepted = [0] * connections
    errors: list[BaseException] = []
    start = threading.Barrier(connections + 1)

    def work(index: int) -> None:
        start.wait()
        try:
            accepted[index] = sender(clients[index], shares[index])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    for client in clients:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    if errors:
        raise errors[0]
    if sum(accepted) != len(messages):
        sys.exit(f"only {sum(accepted)} of {len(messages)} messages were accepted")
    return len(messages) / seconds


def measured_rtt(port: int, pings: int = 20) -> float:
    """The median NOOP round trip through the proxy, in seconds (the proxy is a little late)."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        client.ehlo()
        times = []
        for _ in range(pings):
            began = time.perf_counter()
            client.noop()
            times.append(time.perf_counter() - began)
    finally:
        client.quit()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip, default 20")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=600, help="default 600")
    parser.add_argument("--size-kb", type=float, default=72.0, help="message size, default 72")
    parser.add_argument(
        "--no-session", action="store_true", help="skip the bare SmtpSession measurement"
    )
    args = parser.parse_args(argv)

    sink_port = free_port()
    sink = start_sink(sink_port)
    proxy, port = start_proxy(sink_port, args.rtt_ms)
    session: float | None = None
    try:
        print(
            f"{args.subscribers} subscribers, {args.size_kb:g} KB digest, {args.connections} "
            f"connections, {args.rtt_ms:g} ms round trip (proxy on port {port})",
            flush=True,
        )
        rtt = measured_rtt(port)
        print(f"  measured NOOP round trip: {rtt * 1000:8.2f} ms", flush=True)
        row = bench_one(args.subscribers, args.connections, args.size_kb, port, None)
        if not args.no_session:
            data = digest_message(args.size_kb)
            messages = [
                OutgoingMessage(i, SENDER, f"reader{i:06d}@example.org", data)
                for i in range(args.subscribers)
            ]
            session = run(send_pipelined, port, args.connections, messages)
    finally:
        for process in (proxy, sink):
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
    wire = args.connections / (args.rtt_ms / 1000)
    ratio = row.engine_rate / row.baseline_rate
    of_wire = row.engine_rate / wire
    print()
    size = f"{row.message_bytes / 1000:.1f} KB"
    print(f"  engine (send_now):        {row.engine_rate:8.1f} msg/s   (messages of {size})")
    print(f"  raw smtplib.sendmail:     {row.baseline_rate:8.1f} msg/s")
    if session is not None:
        print(f"  SmtpSession alone:        {session:8.1f} msg/s")
    print(f"  wire limit (conns / RTT): {wire:8.1f} msg/s")
    print(f"  ... at the measured RTT:  {args.connections / rtt:8.1f} msg/s")
    print(f"  engine / raw smtplib:     {ratio:8.2f}   (target >= {TARGET_RATIO})")
    print(f"  engine / wire limit:      {of_wire:8.0%}   (target >= {TARGET_OF_WIRE:.0%})")
    if ratio < TARGET_RATIO or of_wire < TARGET_OF_WIRE:
        print("  below target")


if __name__ == "__main__":
    main()
