"""HTTPS on the gateway's own port (gateway.tls, issue 25): a certificate signed by a test CA made
here with the `cryptography` package, checked by the openai SDK (an httpx client trusting that
CA) and by `gateway keys list --cacert`; a client that does not trust the CA is refused. And the
reverse proxy in front of it: X-Forwarded-For believed from `trusted_proxies` only."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fake_upstream import FakeUpstream
from gateway_support import ADMIN_KEY, KEYS, PUBLIC_MODEL, USER_KEY, FakeStack, gateway_config
from typer.testing import CliRunner

from deploy.cli import app
from gateway.contract.config import ConfigError
from gateway.server import GatewayThread, start_in_thread


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Tandem test CA"))
        .issuer_name(_name("Tandem test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("tandem-gateway"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[GatewayThread, Path]]:
    ca_file, cert_file, key_file = make_ca_and_server_cert(tmp_path)
    with contextlib.ExitStack() as stack:
        tp = stack.enter_context(FakeUpstream(model="up-tp").running())
        pp = stack.enter_context(FakeUpstream(model="up-pp", scheduling_policy="priority").running())
        config = gateway_config(
            tp,
            pp,
            auth=KEYS,
            tls={"cert_file": str(cert_file), "key_file": str(key_file)},
            batches={"data_dir": str(tmp_path / "data")},
        )
        gateway = start_in_thread(config)
        stack.callback(gateway.stop)
        yield gateway, ca_file


def test_the_openai_sdk_talks_https_to_a_gateway_it_trusts(tls_gateway: tuple[GatewayThread, Path]) -> None:
    gateway, ca_file = tls_gateway
    assert gateway.base_url.startswith("https://")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file))) as http:
        client = openai.OpenAI(base_url=gateway.base_url, api_key=USER_KEY, http_client=http, max_retries=0)
        reply = client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content
        streamed = client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        assert len([chunk for chunk in streamed if chunk.choices]) >= 3
    untrusting = openai.OpenAI(base_url=gateway.base_url, api_key=USER_KEY, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        untrusting.models.list()
    with pytest.raises(httpx.HTTPError):
        httpx.get(gateway.base_url.replace("https://", "http://") + "/models", timeout=5)  # no plain HTTP


def test_the_key_commands_trust_the_given_ca(tls_gateway: tuple[GatewayThread, Path]) -> None:
    gateway, ca_file = tls_gateway
    env = {"TANDEM_URL": gateway.base_url, "TANDEM_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "240"}
    listed = CliRunner(env=env).invoke(app, ["keys", "list", "--cacert", str(ca_file)])
    assert listed.exit_code == 0 and "user" in listed.stdout
    refused = CliRunner(env=env).invoke(app, ["keys", "list"])
    assert refused.exit_code == 1 and "--cacert" in refused.output


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    with FakeUpstream(model="a").running() as tp, FakeUpstream(model="b").running() as pp:
        config = gateway_config(tp, pp, tls={"cert_file": str(tmp_path / "nope.pem"), "key_file": str(tmp_path)})
        with pytest.raises(ConfigError, match="nope.pem"):
            start_in_thread(config)


@pytest.mark.parametrize(("trusted", "admin_status"), [(["127.0.0.1"], 403), ([], 200)])
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    make_stack: Callable[..., FakeStack], tmp_path: Path, trusted: list[str], admin_status: int
) -> None:
    """A reverse proxy on the gateway's host connects from loopback; with its X-Forwarded-For
    believed (it is in trusted_proxies), the caller is the address it names, not loopback, so a
    keyless gateway's admin routes refuse it. From an address not trusted, the header is ignored."""
    stack = make_stack(trusted_proxies=trusted, batches={"data_dir": str(tmp_path / "data")})
    forwarded = httpx.get(f"{stack.root_url}/admin/routing", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == admin_status
    assert httpx.get(f"{stack.root_url}/admin/routing").status_code == 200  # loopback itself
