"""A loopback TCP proxy a test can freeze: a network partition between one client and
its server, on one host, without root.

    with FreezableProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql://root@127.0.0.1:{proxy.port}/test"   # give this to the client
        proxy.freeze()   # from now on the peers hear nothing: no reset, no error, silence
        proxy.thaw()     # what was held flows on, as after a partition heals

While frozen, bytes already read are held (not lost) and nothing more is read, and a
new connection is accepted but not connected onwards: a client sees exactly what a
partition shows it, a peer that stopped answering. `close()` (or leaving the `with`)
closes every socket and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit


class FreezableProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until frozen or closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()  # wake every pump, so that it sees the close
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the machinery ----------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _wait_flowing(self) -> bool:
        """Until traffic may flow again; False once the proxy is closed."""
        self._flowing.wait()
        return not self._closed.is_set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            self._spawn(self._connect, client)

    def _connect(self, client: socket.socket) -> None:
        if not self._wait_flowing():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        upstream.settimeout(None)
        self._keep(upstream)
        self._spawn(self._pump, client, upstream)
        self._pump(upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                if not self._wait_flowing():
                    return
                data = source.recv(65536)
                if not data:
                    break
                if not self._wait_flowing():  # frozen after the read: hold it until thawed
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def proxy_for(url: str) -> FreezableProxy:
    """A proxy in front of the server of a TCP `postgresql://` or `redis://` URL."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"{url!r} names no TCP host and port to proxy")
    return FreezableProxy(parts.hostname, parts.port)


def through(url: str, proxy: FreezableProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@" if auth else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
