"""Send one hand-made frame to a node's ROUTER, from whatever network namespace this runs
in, and report what happened, as one JSON line on stdout:

* ``{"handshake": "succeeded" | "failed-auth" | "failed-protocol" | "failed", "reply":
  {...} | null}``: the outcome of the connection's handshake (CurveZMQ and ZAP), then the
  node's reply, or null if none came within ``--timeout`` seconds.

``--cert FILE --server-key FILE`` make the DEALER a CURVE client (the test's forged
requests "with a client key"); without them it speaks plain ZMTP (NULL mechanism).

Standalone on purpose (imports only pyzmq): :meth:`netns.NetCluster.forge` runs it by
path with ``ip netns exec``, so the frame comes from that namespace's address - which is
what ``none`` mode's peer-host check looks at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

_EVENTS = {zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
           zmq.EVENT_HANDSHAKE_FAILED_AUTH: "failed-auth",
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed-protocol",
           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--frame", required=True, help="the request, as JSON text")
    parser.add_argument("--cert")
    parser.add_argument("--server-key")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if args.cert:
        public, secret = zmq.auth.load_certificate(args.cert)
        server, _ = zmq.auth.load_certificate(args.server_key)
        assert public is not None and secret is not None and server is not None
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server
    monitor = sock.get_monitor_socket(sum(_EVENTS))
    sock.connect(args.endpoint)
    sock.send(args.frame.encode())
    deadline = time.monotonic() + args.timeout
    handshake = None
    reply = None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while reply is None and (left := deadline - time.monotonic()) > 0:
        ready = dict(poller.poll(max(1, int(left * 1000))))
        if monitor in ready:
            handshake = _EVENTS.get(recv_monitor_message(monitor)["event"], handshake)
        if sock in ready:
            reply = json.loads(sock.recv())
    print(json.dumps({"handshake": handshake, "reply": reply}))
    sock.disable_monitor()
    monitor.close(linger=0)
    sock.close(linger=0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
