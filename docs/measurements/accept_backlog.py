"""How a listen backlog changes the time to open connections one after another against a
bare accept loop in a thread (selectors, as zcounter's metrics door): with a small
backlog the client's SYN is dropped whenever the queue is full and retransmitted after
1 s.  Usage: python docs/measurements/accept_backlog.py [BACKLOG ...] (default 5 64 512).

Measured (issue 19, 2-core machine, 300 connections): backlog 5 (prometheus_client's
server): 36.85 s, 36 stalls; 64: 2.06 s, 2 stalls; 512: 0.02 s, none.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
import time


def measure(backlog: int, count: int = 300) -> tuple[float, int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
    listener.setblocking(False)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop() -> None:
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        while not stop.is_set():
            for _ in sel.select(0.1):
                while True:
                    try:
                        held.append(listener.accept()[0])
                    except BlockingIOError:
                        break
    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    clients, stalls = [], 0
    started = time.monotonic()
    for _ in range(count):
        t = time.monotonic()
        clients.append(socket.create_connection(listener.getsockname(), 5))
        stalls += time.monotonic() - t > 0.5
    took = time.monotonic() - started
    stop.set()
    thread.join()
    for sock in clients + held + [listener]:
        sock.close()
    return took, stalls


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["5", "64", "512"]:
        took, stalls = measure(int(arg))
        print(f"backlog {arg}: 300 connections in {took:.2f}s, {stalls} stalls over 0.5s")
