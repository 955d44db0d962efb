"""A hostile 'witness' for the witness-pusher tests: ``python hostile_witness.py MODE COUNT_FILE``.

Listens on 127.0.0.1 (an ephemeral port, printed as ``listening on 127.0.0.1:PORT``) and answers
every request the way MODE says, writing the bytes it managed to send to COUNT_FILE:

* ``garbage``: a reply that is not HTTP at all;
* ``slow``: a 200 with a long Content-Length, then one byte every two seconds (never finishes);
* ``huge``: a 200 with a Content-Length of 256 MiB, streamed as fast as the reader takes it.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

HUGE = 256 * 1024 * 1024


def record(count_file: Path, n: int) -> None:
    """Write the count atomically (the test reads it while this runs)."""
    tmp = count_file.with_name(count_file.name + f".{threading.get_ident()}")
    tmp.write_text(str(n))
    tmp.replace(count_file)


def handle(conn: socket.socket, mode: str, sent: list[int], count_file: Path) -> None:
    try:
        conn.settimeout(600)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        if mode == "garbage":
            conn.sendall(b"I AM NOT A WITNESS\r\n\r\n")
            time.sleep(1)
            return
        if mode == "slow":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while True:
                conn.sendall(b"x")
                sent[0] += 1
                record(count_file, sent[0])
                time.sleep(2)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % HUGE)
        block = b"\0" * 65536
        for _ in range(HUGE // len(block)):
            conn.sendall(block)
            sent[0] += len(block)
            if sent[0] % (1 << 20) == 0:
                record(count_file, sent[0])
    except OSError:
        return
    finally:
        record(count_file, sent[0])
        conn.close()


def main() -> None:
    mode, count_file = sys.argv[1], Path(sys.argv[2])
    sent = [0]
    record(count_file, 0)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    print(f"listening on 127.0.0.1:{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, mode, sent, count_file), daemon=True).start()


if __name__ == "__main__":
    main()
