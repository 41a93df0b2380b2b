"""Debian's nginx in front of ``chatbot serve`` processes, running the very site
configuration docs/deployment.md gives operators, so that the two cannot drift apart.

The configuration is the ``nginx`` block that follows the marker comment in
docs/deployment.md. Only its placeholders change: the upstream addresses become the
processes' ports, the two ``listen`` lines free loopback ports, and the certificate's paths
a self-signed certificate for 127.0.0.1 made here. Everything nginx writes (pid, logs,
temporary files) stays in the test's directory, and it runs in the foreground, as root in
CI and as anyone else on a developer's machine. Where nginx is not installed the tests skip
with a reason that names it, which CI turns into a failure (.ci/run).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import signal
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.processes import free_port

#: Debian's nginx (apt-get install nginx); NGINX_PATH points elsewhere.
NGINX = Path(os.environ.get("NGINX_PATH", "/usr/sbin/nginx"))
DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
#: The comment that precedes the tested block in docs/deployment.md.
MARKER = "<!-- The tests (tests/nginx.py) run this block as it is"
#: The lines of the block that name the operator's machine, each replaced by the test's.
UPSTREAMS = (
    "server 127.0.0.1:8001 max_fails=1 fail_timeout=10s;",
    "server 127.0.0.1:8002 max_fails=1 fail_timeout=10s;",
)
HTTP_LISTEN = "listen 80;"
HTTPS_LISTEN = "listen 443 ssl;"
CERTIFICATE = "/etc/letsencrypt/live/chat.example.com/fullchain.pem"
CERTIFICATE_KEY = "/etc/letsencrypt/live/chat.example.com/privkey.pem"


def documented_site() -> str:
    """The ``nginx`` block docs/deployment.md gives operators, as it is written there."""
    text = DEPLOYMENT.read_text(encoding="utf-8")
    start = text.find(MARKER)
    assert start >= 0, f"docs/deployment.md lost the marker {MARKER!r}"
    found = re.compile(r"```nginx\n(.*?)```", re.S).search(text, start)
    assert found is not None, "docs/deployment.md has no ```nginx block after its marker"
    return found.group(1)


def site_config(
    upstreams: Sequence[int], http_port: int, https_port: int, cert: Path, key: Path
) -> str:
    """The documented site with its placeholders replaced, each found exactly once."""
    assert len(upstreams) == len(UPSTREAMS), f"the documented site has {len(UPSTREAMS)} upstreams"
    replacements = {
        HTTP_LISTEN: f"listen 127.0.0.1:{http_port};",
        HTTPS_LISTEN: f"listen 127.0.0.1:{https_port} ssl;",
        CERTIFICATE: str(cert),
        CERTIFICATE_KEY: str(key),
    }
    for line, port in zip(UPSTREAMS, upstreams, strict=True):
        replacements[line] = line.replace(line.split()[1], f"127.0.0.1:{port}")
    site = documented_site()
    for placeholder, value in replacements.items():
        count = site.count(placeholder)
        assert count == 1, (
            f"docs/deployment.md's nginx block has {placeholder!r} {count} times, not once: "
            "tests/nginx.py replaces it with the test's value"
        )
        site = site.replace(placeholder, value)
    return site


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Nginx:
    """nginx on two free loopback ports (HTTP and HTTPS) in front of ``upstreams``."""

    def __init__(self, directory: Path, upstreams: Sequence[int]) -> None:
        self.directory = directory
        self.upstreams = list(upstreams)
        self.http_port = free_port()
        self.https_port = free_port()
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"
        self.cert = directory / "cert.pem"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/ws/chat/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this nginx's certificate, and only it."""
        return ssl.create_default_context(cafile=str(self.cert))

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the HTTPS side."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=10, **kwargs)

    def main_config(self, site: Path) -> str:
        """What Debian's /etc/nginx/nginx.conf holds around a site, with this directory's
        paths: the site is included in the ``http`` block, as conf.d/ files are there."""
        d = self.directory
        # Run as root, nginx would switch its workers to nobody, who cannot reach pytest's
        # private temporary directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {d / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\nworker_processes 1;\npid {d / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            "events {\n    worker_connections 256;\n}\n"
            "http {\n"
            "    log_format upstream "
            "'$remote_addr \"$request\" $status $request_id $upstream_addr';\n"
            f"    access_log {self.access_log} upstream;\n"
            f"{temp}\n"
            f"    include {site};\n"
            "}\n"
        )

    def __enter__(self) -> Nginx:
        if not os.access(NGINX, os.X_OK):
            pytest.skip(
                f"nginx is not installed at {NGINX}: apt-get install nginx "
                "(or set NGINX_PATH to its path)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed(self.directory)
        site = self.directory / "chatbot.conf"
        site.write_text(
            site_config(self.upstreams, self.http_port, self.https_port, cert, key),
            encoding="utf-8",
        )
        conf = self.directory / "nginx.conf"
        conf.write_text(self.main_config(site), encoding="utf-8")
        # -e: the error log before the configuration is read (Debian's default is
        # /var/log/nginx, which only root may write).
        command = [str(NGINX), "-p", str(self.directory), "-e", str(self.error_log)]
        command += ["-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"nginx -t refused the configuration:\n{checked.stderr}"
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        process = self.process

        def ready() -> bool:
            with contextlib.suppress(httpx.TransportError), self.client() as client:
                if client.get("/healthz").status_code == 200:
                    return True
            assert process.poll() is None, self.errors()
            return False

        try:
            wait_for(ready, "nginx to answer /healthz through to the processes", 20)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def errors(self) -> str:
        """What nginx logged as its errors (upstream failures among them)."""
        return self.error_log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Stop at once (SIGTERM): a graceful stop would wait for every open socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
