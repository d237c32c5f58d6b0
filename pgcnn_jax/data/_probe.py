"""Before TFDS downloads: a quick check that the download hosts answer, and a clean-up of what a
failed download leaves behind.

Offline, ``download_and_prepare`` spends minutes in urllib3 retries before it fails;
:func:`probe_hosts` resolves each host and opens one TCP connection (through the proxy that
``requests`` would use, if any) with a timeout of a few seconds instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

__all__ = [
    "PROBE_TIMEOUT",
    "pending_downloads",
    "probe_hosts",
    "remove_partial_downloads",
    "snapshot",
]

PROBE_TIMEOUT = 5.0
"""Seconds allowed for one DNS lookup and for one TCP connect of :func:`probe_hosts`."""

_TMP = re.compile(r"\.tmp\.[0-9a-f]{32}$")  # TFDS downloads into <name>.tmp.<uuid hex>/


def _target(url: str) -> tuple[str, int] | None:
    """``(host, port)`` a request for ``url`` connects to first (its proxy, if one is set)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    # getaddrinfo has no timeout of its own: it runs in a daemon thread we stop waiting for.
    answer: dict[str, Any] = {}

    def lookup() -> None:
        try:
            answer["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            answer["error"] = err

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise OSError(f"cannot resolve {host}: no answer within {timeout:g} s")
    if "error" in answer:
        raise OSError(f"cannot resolve {host}: {answer['error']}")
    if not answer["addresses"]:
        raise OSError(f"cannot resolve {host}: no address")
    return answer["addresses"]


def _connect(host: str, port: int, addresses: list[tuple], timeout: float) -> None:
    errors = []
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return
        except OSError as err:
            errors.append(f"{address[0]}: {err or type(err).__name__}")
    raise OSError(f"cannot connect to {host}:{port} ({'; '.join(errors)})")


def probe_hosts(urls: Iterable[str], *, timeout: float | None = None) -> None:
    """Resolves the host of each URL and opens (and closes) one TCP connection to it.

    Args:
      urls: download URLs; each distinct ``(host, port)`` is tried once. With a proxy
        configured for the scheme (``https_proxy`` etc., unless ``no_proxy`` exempts the
        host), the proxy is tried instead.
      timeout: seconds per lookup and per connect (default :data:`PROBE_TIMEOUT`).

    Raises:
      OSError: naming the first host that cannot be resolved or reached in time.
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    seen = set()
    for url in urls:
        target = _target(url)
        if target is None or target in seen:
            continue
        seen.add(target)
        _connect(*target, _resolve(*target, timeout), timeout)


def _downloads_dir(builder: Any) -> str:
    return os.path.join(os.fspath(builder.data_dir_root), "downloads")


def pending_downloads(builder: Any) -> list[str]:
    """The URLs ``builder.download_and_prepare()`` would fetch over the network.

    Empty when the dataset is prepared, when the builder finds its source locally (its
    ``has_local_source()``, e.g. a manual download) or when every registered file is already
    in ``<data_dir>/downloads``. The URLs come from the builder's ``DOWNLOAD_URLS`` and its
    TFDS checksums registry (``url_infos``). Also empty under ``tfds.testing.mock_data``,
    whose ``download_and_prepare`` downloads nothing."""
    prepare = getattr(type(builder), "download_and_prepare", None)
    if getattr(prepare, "__module__", None) == "tensorflow_datasets.testing.mocking":
        return []
    if builder.is_prepared():
        return []
    local = getattr(builder, "has_local_source", None)
    if local is not None and local():
        return []
    from tensorflow_datasets.core.download.resource import get_dl_fname

    infos = builder.url_infos or {}
    downloads = _downloads_dir(builder)
    pending = []
    for url in dict.fromkeys([*getattr(builder, "DOWNLOAD_URLS", ()), *infos]):
        info = infos.get(url)
        if info is not None:
            name = get_dl_fname(url, info.checksum)
            if any(
                os.path.exists(os.path.join(downloads, *sub, name)) for sub in ((), (builder.name,))
            ):
                continue
        pending.append(url)
    return pending


def _download_dirs(builder: Any) -> list[str]:
    downloads = _downloads_dir(builder)
    return [
        os.fspath(builder.data_dir_root),
        os.path.join(os.fspath(builder.data_dir_root), builder.name),
        downloads,
        os.path.join(downloads, builder.name),
        os.path.join(downloads, "extracted"),
    ]


def snapshot(builder: Any) -> dict[str, set[str] | None]:
    """The entries of the directories a download writes to (``None``: directory absent)."""
    return {d: set(os.listdir(d)) if os.path.isdir(d) else None for d in _download_dirs(builder)}


def remove_partial_downloads(builder: Any, before: dict[str, set[str] | None]) -> None:
    """After a failed ``download_and_prepare``: removes the temporary download directories it
    created and the directories it created that are left empty (``before``: :func:`snapshot`
    taken before the attempt). Anything that existed before is kept."""
    for d in _download_dirs(builder):
        if not os.path.isdir(d):
            continue
        for name in set(os.listdir(d)) - (before.get(d) or set()):
            if _TMP.search(name):
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)
    for d in reversed(_download_dirs(builder)):  # deepest first
        if before.get(d) is None and os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)
