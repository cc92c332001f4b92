"""TLS for the Python front ends: uvicorn's SSLContext and grpc.aio's credentials, both
re-reading the certificate and key when either file changes (looked at, at most once a
second, when a connection arrives; it applies to new handshakes), keeping the last good
pair when a new one does not load; mutual TLS against --tls-client-ca; and the verified
client certificate's common name, which Authority takes as a principal's subject."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    import asyncio

    import grpc

__all__ = [
    "TLSConfigError",
    "TLSFiles",
    "TLSReloader",
    "grpc_server_credentials",
    "grpc_peer_common_name",
    "peer_common_name",
    "scope_peer_common_name",
    "tls_http_protocol",
]

logger = logging.getLogger("inferbridge.security")

#: Where the uvicorn protocol puts the verified client certificate's common name, inside
#: the ASGI TLS extension (scope["extensions"]["tls"]).
PEER_CN = "client_cert_common_name"


class TLSConfigError(ValueError):
    """A TLS setting that cannot work; the message names the setting and its flag."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None
    client_auth: Literal["require", "request"] = "require"

    @classmethod
    def from_settings(cls, settings: object) -> TLSFiles | None:
        """From tls_cert, tls_key, tls_client_ca, tls_client_auth; None when TLS is off.
        TLSConfigError when only one of the certificate and the key is given, or client
        settings come without them."""

        def get(name: str) -> Any:
            return getattr(settings, name, None)

        cert, key, ca, mode = get("tls_cert"), get("tls_key"), get("tls_client_ca"), None
        mode = get("tls_client_auth")
        if cert is None and key is None:
            if ca is not None or mode is not None:
                raise TLSConfigError(
                    "tls_client_ca / tls_client_auth (--tls-client-ca, --tls-client-auth) need "
                    "the server's own certificate: --tls-cert and --tls-key"
                )
            return None
        if cert is None or key is None:
            missing = "tls_key (--tls-key)" if key is None else "tls_cert (--tls-cert)"
            raise TLSConfigError(f"{missing} is missing: TLS needs both a certificate and a key")
        if mode is not None and ca is None:
            raise TLSConfigError(
                "tls_client_auth (--tls-client-auth) needs tls_client_ca (--tls-client-ca): "
                "the CAs client certificates are verified against"
            )
        return cls(Path(cert), Path(key), Path(ca) if ca is not None else None, mode or "require")


def _signature(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    signature = []
    for path in paths:
        stat = os.stat(path)
        signature.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{setting}: {path}: {exc.strerror or exc}") from None


class TLSReloader:
    """The server's TLS material: one SSLContext (for uvicorn) whose chain is reloaded in
    place, and the PEM bytes grpc's credential fetcher hands out. Built at start-up:
    TLSConfigError names the setting whose file does not load."""

    def __init__(
        self,
        files: TLSFiles,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self._interval_s = interval_s
        self._clock = clock
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.client_ca: bytes | None = None
        if files.client_ca is not None:
            self.client_ca = _read(files.client_ca, "tls_client_ca (--tls-client-ca)")
            try:
                self.context.load_verify_locations(cadata=self.client_ca.decode("latin-1"))
            except (ssl.SSLError, ValueError) as exc:
                raise TLSConfigError(
                    f"tls_client_ca (--tls-client-ca): {files.client_ca}: no CA certificate "
                    f"loads from it ({exc})"
                ) from None
            self.context.verify_mode = (
                ssl.CERT_REQUIRED if files.client_auth == "require" else ssl.CERT_OPTIONAL
            )
        self._watched = (files.cert, files.key)
        try:
            self._signature = _signature(self._watched)
        except OSError as exc:
            raise TLSConfigError(
                f"tls_cert / tls_key (--tls-cert, --tls-key): {exc.filename}: {exc.strerror or exc}"
            ) from None
        try:
            self.cert_pem, self.key_pem = self._load()
        except ValueError as exc:
            raise TLSConfigError(f"tls_cert / tls_key (--tls-cert, --tls-key): {exc}") from None
        self._checked = clock()
        self.version = 1  # good pairs loaded so far
        self._complaint = ""

    def _load(self) -> tuple[bytes, bytes]:
        """Read both files and load them into the context (which keeps its old pair when
        this raises); ValueError says why."""
        cert = _read(self.files.cert, "tls_cert (--tls-cert)")
        key = _read(self.files.key, "tls_key (--tls-key)")
        try:
            # Tried on a scratch context first: a failed load_cert_chain can leave a new
            # certificate beside the old key in the context that serves.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.files.cert, self.files.key)
            self.context.load_cert_chain(self.files.cert, self.files.key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"{self.files.cert} and {self.files.key} are not a PEM certificate chain and "
                f"its private key ({getattr(exc, 'reason', None) or exc})"
            ) from None
        return cert, key

    def check(self) -> bool:
        """Reload the pair if a file changed (at most once per interval); True when a new
        pair was loaded."""
        now = self._clock()
        if now - self._checked < self._interval_s:
            return False
        self._checked = now
        try:
            signature = _signature(self._watched)
        except OSError as exc:
            self._complain(f"{exc.filename}: {exc.strerror or exc}")
            return False
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            self.cert_pem, self.key_pem = self._load()
        except (ValueError, TLSConfigError) as exc:
            self._complain(str(exc))
            return False
        self.version += 1
        self._complaint = ""
        logger.info("TLS certificate %s reloaded", self.files.cert)
        return True

    def _complain(self, reason: str) -> None:
        if reason != self._complaint:
            self._complaint = reason
            logger.warning(
                "the TLS certificate and key do not load (%s); the last good pair stays in force",
                reason,
            )


def grpc_server_credentials(reloader: TLSReloader) -> grpc.ServerCredentials:
    """grpc.aio's server credentials: the current pair, refreshed by the fetcher gRPC calls
    before each new handshake."""
    import grpc

    def configuration() -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(reloader.key_pem, reloader.cert_pem)], root_certificates=reloader.client_ca
        )

    served = reloader.version

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal served
        reloader.check()
        if reloader.version == served:
            return None  # no change: gRPC keeps the configuration it has
        served = reloader.version
        return configuration()

    require = reloader.client_ca is not None and reloader.files.client_auth == "require"
    # grpc-stubs types the fetcher without its documented None ("no change").
    fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", fetch)
    return grpc.dynamic_ssl_server_credentials(configuration(), fetcher, require)


def peer_common_name(certificate: Mapping[str, Any] | None) -> str:
    """The subject common name of a verified peer certificate as ssl's getpeercert()
    gives it ("" for none). The last CN when there are several, as Go reads a subject."""
    if not certificate:
        return ""
    name = ""
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
    return name


def scope_peer_common_name(scope: Mapping[str, Any]) -> str:
    """The verified client certificate's common name that tls_http_protocol put in an
    ASGI scope, else ""."""
    tls = scope.get("extensions", {}).get("tls")
    return str(tls.get(PEER_CN, "")) if tls else ""


def grpc_peer_common_name(context: Any) -> str:
    """The verified client certificate's common name of a grpc.aio call, else ""."""
    try:
        auth = context.auth_context()
    except Exception:  # not a TLS call (or a context without one)
        return ""
    names = auth.get("x509_common_name") or ()
    return names[-1].decode("utf-8", "replace") if names else ""


def tls_http_protocol(
    base: type[asyncio.Protocol], reloader: TLSReloader
) -> type[asyncio.Protocol]:
    """uvicorn's protocol class `base`, looking at the certificate files when a
    connection is accepted (before its handshake), and giving each request's scope the
    ASGI TLS extension with the verified client certificate's common name."""

    class TLSHttpProtocol(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            reloader.check()
            super().__init__(*args, **kwargs)
            self._tls_extension: dict[str, Any] = {}

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peercert")
            self._tls_extension = {
                PEER_CN: peer_common_name(peer),
                "client_cert_name": _subject_text(peer),
                "client_cert_error": None,
            }
            super().connection_made(transport)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            extensions = self.scope.setdefault("extensions", {})
            extensions["tls"] = self._tls_extension

    return TLSHttpProtocol


def _subject_text(certificate: Mapping[str, Any] | None) -> str | None:
    """The subject as `CN=...,O=...` (most specific first, as RFC 4514 writes it)."""
    if not certificate:
        return None
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts = [
        f"{short.get(key, key)}={value}"
        for rdn in certificate.get("subject", ())
        for key, value in rdn
    ]
    return ",".join(reversed(parts))
