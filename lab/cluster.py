"""Joining a Ray cluster, and refusing one the network at large could reach.

Whoever can reach a Ray cluster's ports can run code on every node of it. A lab's cluster belongs
on loopback or a private network; `--cluster` to a public address is refused unless the user says
`--allow-public-cluster` (and has set up Ray's token authentication and TLS: docs/lab.md)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Callable

from harness.errors import ConfigError

NAMESPACE = "harness"
INSTALL = "pip install 'harness[lab]' (or, in a checkout, `pip install -e '.[lab]'`)"


def import_ray():
    """Ray, or one clear error: it is an optional extra, imported only for a lab."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster", None, f"Ray is not installed here; install the lab extra: {INSTALL}") from None
    return ray


def split_address(address: str) -> tuple[str | None, str | None]:
    """(host, port as written) of `ray://host:port`, `host:port`, `[v6]:port`, a bare host or v6
    address (port None); (None, None) for `auto`."""
    if address == "auto":
        return None, None
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        return host, tail[1:] if tail.startswith(":") else None
    if rest.count(":") == 1:
        host, port = rest.rsplit(":", 1)
        return host, port
    return rest, None


def public_addresses(host: str, option: str = "--cluster") -> list[str]:
    """The addresses `host` stands for that are neither loopback, private nor link-local. A name
    is resolved (the system's resolver, as Ray will); an address literal is taken as it is."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)]
        except (socket.gaierror, UnicodeError) as exc:
            raise ConfigError(option, host, f"cannot resolve this host name: {exc}") from None
    return sorted({str(a) for a in found if not (a.is_loopback or a.is_private or a.is_link_local)})


def check_address(address: str, allow_public: bool, option: str = "--cluster") -> None:
    host, port = split_address(address)
    if not host:
        if address != "auto":
            raise ConfigError(option, address, "expected auto, HOST:PORT or ray://HOST:PORT")
        return
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(option, address, f"the port {port!r} is not a port number (1 to 65535)")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise ConfigError(option, None, f"{address} is every interface of this host (Ray would listen on "
                                            "all of them); give the one address of the lab's private network")
    except ValueError:
        pass  # a name, resolved below
    public = public_addresses(host, option)
    if public and not allow_public:
        raise ConfigError(option, address, f"{host} is a public address ({', '.join(public)}): a Ray cluster "
                                           "reachable from the internet runs anyone's code. Keep the lab on a private "
                                           "network, or pass --allow-public-cluster once token authentication and TLS "
                                           "are set up (docs/lab.md)")


def connect(address: str, allow_public: bool, log: Callable[[str], None]):
    """ray.init to the cluster at `address`, checked before and (for `auto`) after joining."""
    check_address(address, allow_public)
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the lab
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError("--cluster", address, "no Ray cluster answers there, or it refused this coordinator's "
                                                 "token (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH: docs/lab.md): "
                                                 f"{str(exc).splitlines()[0]}") from None
    gcs = _gcs_address(ray)
    if address == "auto" and gcs:
        try:
            check_address(gcs, allow_public)
        except ConfigError:
            ray.shutdown()
            raise
    log(f"lab: joined the Ray cluster at {gcs or address} (Ray {ray.__version__})")
    return ray


def _gcs_address(ray) -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a client connection has none to show
        return None
