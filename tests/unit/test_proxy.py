"""The partition proxy of the chaos tests (tests/proxy.py): it forwards, a freeze holds
every byte without an error on either side, a thaw delivers what was held, and close
leaves no thread behind."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.proxy import FreezableProxy, through


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        server.close()
        thread.join(timeout=10)


def test_a_freeze_holds_the_bytes_and_a_thaw_delivers_them() -> None:
    with echo_server() as port, FreezableProxy("127.0.0.1", port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with client:
            client.sendall(b"before")
            assert client.recv(1024) == b"before"
            proxy.freeze()
            client.sendall(b"during")
            client.settimeout(0.3)  # silence, not an error: what a partition looks like
            with pytest.raises(TimeoutError):
                client.recv(1024)
            proxy.thaw()
            client.settimeout(10)
            assert client.recv(1024) == b"during"
        threads = list(proxy._threads)
    assert not any(t.is_alive() for t in threads)


def test_a_url_is_pointed_at_the_proxy() -> None:
    with echo_server() as port, FreezableProxy("127.0.0.1", port) as proxy:
        url = through(f"postgresql://root:pw@127.0.0.1:{port}/test?x=1", proxy)
        assert url == f"postgresql://root:pw@127.0.0.1:{proxy.port}/test?x=1"
