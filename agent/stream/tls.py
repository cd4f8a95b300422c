"""TLS for ``dw serve`` (``wss://`` and ``https://``): from a certificate and key, or self-signed for a LAN.

Browsers give WebCodecs only to secure contexts, so the viewer on another machine needs ``https``. A
self-signed certificate (``--tls-self-signed``) is made with the ``openssl`` command (an EC P-256 key,
valid 30 days, for ``localhost``, the loopback addresses, this machine's name and the bound address),
in a private temporary directory that is removed once loaded; its SHA-256 fingerprint is printed so a
user can check what the browser shows before accepting it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path


class TLSError(Exception):
    """The certificate or key cannot be used (one line for the user)."""


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as e:
        raise TLSError(f"{e.filename}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise TLSError(f"cannot load the certificate {cert} with the key {key}: {e}") from None
    return ctx


def fingerprint(cert_pem: str | bytes) -> str:
    """The certificate's SHA-256 fingerprint as browsers show it (AA:BB:...)."""
    pem = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _alt_names(host: str) -> list[str]:
    names = {"DNS:localhost", "IP:127.0.0.1", "IP:::1"}
    try:
        names.add(f"DNS:{socket.gethostname()}")
    except OSError:
        pass
    if host and host not in ("0.0.0.0", "::"):
        try:
            names.add(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            names.add(f"DNS:{host}")
    return sorted(names)


def self_signed(host: str = "127.0.0.1", days: int = 30, out_dir: str | Path | None = None) -> tuple[str, str]:
    """Make a self-signed certificate; returns (certificate PEM, key PEM). ``out_dir`` keeps the files."""
    exe = shutil.which("openssl")
    if exe is None:
        raise TLSError("--tls-self-signed needs the openssl command (apt-get install openssl), "
                       "or give --tls-cert and --tls-key")
    with tempfile.TemporaryDirectory(prefix="dw-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cmd = [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", str(key), "-out", str(cert), "-days", str(int(days)), "-subj", "/CN=dw serve",
               "-addext", "subjectAltName=" + ",".join(_alt_names(host)),
               "-addext", "extendedKeyUsage=serverAuth"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise TLSError(f"openssl could not make a certificate: {r.stderr.strip()[-300:]}")
        cert_pem, key_pem = cert.read_text(), key.read_text()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cert.pem").write_text(cert_pem)
        kf = out / "key.pem"
        kf.touch(mode=0o600)
        kf.write_text(key_pem)
    return cert_pem, key_pem


def self_signed_context(host: str = "127.0.0.1", days: int = 30) -> tuple[ssl.SSLContext, str, str]:
    """A server context with a new self-signed certificate: (context, certificate PEM, fingerprint)."""
    cert_pem, key_pem = self_signed(host, days)
    with tempfile.TemporaryDirectory(prefix="dw-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(cert_pem)
        key.touch(mode=0o600)
        key.write_text(key_pem)
        ctx = server_context(cert, key)
    return ctx, cert_pem, fingerprint(cert_pem)


def client_context(cafile: str | Path | None = None, cadata: str | None = None) -> ssl.SSLContext:
    """A client context trusting the system's CAs, plus ``cafile``/``cadata`` (a self-signed server's cert)."""
    ctx = ssl.create_default_context()
    if cafile is not None or cadata is not None:
        ctx.load_verify_locations(cafile=str(cafile) if cafile else None, cadata=cadata)
    return ctx
