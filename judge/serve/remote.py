"""Remote images: `http(s)` URLs, fetched only from allowed hosts at public addresses.

Fetching what a caller names is a server-side request forgery risk, so each step closes
one way to reach what the caller should not:

* the URL is parsed strictly: http or https, a host, no user info, no whitespace or
  control characters, a numeric port, and only ports 80 and 443 unless configured
  (400 `bad_url`, `port_not_allowed`);
* the host must be on the allow-list (400 `host_not_allowed`);
* the name is resolved once, and every address it gives must be public: not loopback,
  private, link-local, multicast, reserved or unspecified (an IPv4 address inside IPv6
  is checked as IPv4), unless `--allow-private-remote`;
* the connection goes to the address that was checked, with the URL's host name in the
  Host header and in TLS (SNI and the certificate check): a DNS answer that changes
  between the check and the connection (DNS rebinding) changes nothing;
* no content encoding is asked for (`Accept-Encoding: identity`) and none is undone: the
  raw bytes are counted as they arrive and the fetch stops past the limit, so a small
  compressed body never expands in memory; a response that is encoded anyway is refused;
* no redirects, no proxy variables, one timeout on the whole fetch, name lookup included;
* whatever fails once the URL passed those checks (the name does not resolve, the address
  is not public, nothing listens, a timeout, TLS, an HTTP status other than 200) answers
  the same 422 `fetch_failed`, so a caller cannot tell a missing host from a closed port
  or a refused address; the detail goes to the service's log.

The fetch runs inside the request's concurrency slot, like the rest of its work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from judge.serve.config import RemoteImages
from judge.serve.problems import ApiError

_log = logging.getLogger("judge.serve")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Failed(Exception):
    """A fetch that failed after the URL was accepted; its message goes to the log only."""


def is_public(address: IPAddress) -> bool:
    """Whether `address` is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_loopback
        or address.is_link_local or address.is_reserved or address.is_unspecified
    )


def parse_url(url: str, remote: RemoteImages, param: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path and query) of an acceptable URL.

    Raises:
        ApiError: 400 for a malformed URL, remote URLs turned off, a host or port not
            allowed.
    """
    def bad(why: str) -> ApiError:
        return ApiError(400, "bad_url", f"{param}: {why}", param=param)

    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise bad("the URL holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise bad(f"malformed URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise bad("only data: and http(s) URLs with a host")
    if not remote.enabled:
        raise ApiError(
            400, "remote_urls_off",
            f"{param}: remote image URLs are turned off on this service; send the image as a "
            "data URL (data:image/png;base64,...)",
            param=param,
        )
    if parts.username is not None or parts.password is not None:
        raise bad("a URL with user info (user:password@) is not fetched")
    host = parts.hostname.rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a name, not an address literal: as it goes on the wire
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise bad("the host name is not a valid name") from None
    if not remote.allows(host):
        raise ApiError(
            400, "host_not_allowed",
            f"{param}: the host {host} is not on this service's allow-list", param=param,
        )
    port = port if port is not None else (443 if scheme == "https" else 80)
    if port not in remote.allow_ports:
        raise ApiError(
            400, "port_not_allowed",
            f"{param}: port {port} is not fetched; this service fetches from port(s) "
            f"{', '.join(str(p) for p in remote.allow_ports)}",
            param=param,
        )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port, target


async def resolve(host: str, port: int, remote: RemoteImages) -> IPAddress:
    """The address to connect to: `host` resolved once, every answer checked."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            # The system resolver in a worker thread (counted against the request's slot;
            # the loop's own resolver, uvloop's under uvicorn, would not be).
            infos = await asyncio.to_thread(socket.getaddrinfo, host, port, 0,
                                            socket.SOCK_STREAM)
        except OSError as error:
            raise _Failed(f"cannot resolve {host}: {error}") from None
        found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise _Failed(f"{host} has no address")
    if not remote.allow_private:
        refused = [str(a) for a in found if not is_public(a)]
        if refused:
            # All or nothing: a name with one inside address among public ones is refused.
            raise _Failed(f"{host} resolves to an address that is not public: "
                          f"{', '.join(refused)}")
    return found[0]


async def fetch(url: str, remote: RemoteImages, cap: int, param: str) -> bytes:
    """The bytes of the image at `url` (at most `cap`).

    Raises:
        ApiError: 400 (the URL, its host or port), 413 (over `cap`), 422 `fetch_failed`
            (anything else: one message whatever went wrong).
    """
    import httpx

    scheme, host, port, target = parse_url(url, remote, param)
    try:
        async with asyncio.timeout(remote.timeout_s):
            address = await resolve(host, port, remote)
            shown = f"[{address}]" if address.version == 6 else str(address)
            default = 443 if scheme == "https" else 80
            headers = {
                "Host": host if port == default else f"{host}:{port}",
                "Accept-Encoding": "identity",
                "User-Agent": "judge-serve",
            }
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            async with httpx.AsyncClient(
                timeout=remote.timeout_s, follow_redirects=False, trust_env=False
            ) as client, client.stream(
                "GET", f"{scheme}://{shown}:{port}{target}", headers=headers,
                extensions=extensions,
            ) as response:
                if response.status_code != 200:
                    raise _Failed(f"HTTP {response.status_code}"
                                  + (" (a redirect)" if response.is_redirect else ""))
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise _Failed(f"the body is {encoding}-encoded though none was asked for")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise _too_large(int(declared), cap, param)
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_raw():
                    total += len(chunk)
                    if total > cap:
                        raise _too_large(total, cap, param)
                    chunks.append(chunk)
    except ApiError:
        raise
    except (TimeoutError, _Failed, httpx.HTTPError, httpx.InvalidURL, OSError,
            ValueError) as error:
        detail = "timed out" if isinstance(error, TimeoutError) else str(error) or type(
            error).__name__
        _log.info("%s: fetching an image from %s failed: %s", param, host, detail)
        raise ApiError(
            422, "fetch_failed",
            f"{param}: the image could not be fetched from this URL (the service's log "
            "says why)",
            param=param,
        ) from None
    return b"".join(chunks)


def _too_large(size: int, limit: int, param: str) -> ApiError:
    return ApiError(
        413, "image_too_large",
        f"{param}: the remote image is {size:,}+ bytes, over the limit of {limit:,}",
        param=param,
    )
