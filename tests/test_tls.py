"""The standalone server with TLS: ``--certfile``/``--keyfile`` serve ``wss://``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import cc_executor_nb
from cc_executor_nb.client import connect
from cc_executor_nb.errors import CCExecError
from cc_executor_nb.kernel.jobserver import JobServerError, job_server
from cc_executor_nb.kernel.run import unreachable
from cc_executor_nb.server.jobs import LOST_ERROR
from cc_executor_nb.server.main import cleartext_warning
from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, read_runtime_file

from .conftest import collect, fake, output_of
from .kernel_utils import fake_command
from .servers import SERVER, ServerProcess, start_server
from .util import eventually, scaled

TOKEN = "tls-token"
_TOKEN_ENV = {"CC_EXECUTOR_TOKEN": TOKEN}
_Certificate = tuple[Path, Path, ec.EllipticCurvePrivateKey]


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _certificate(folder: Path) -> _Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) files, and the key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_pem_key(key))
    return cert_file, key_file, key


@pytest.fixture
def certificate(tmp_path: Path) -> _Certificate:
    return _certificate(tmp_path)


@pytest.fixture
def tls_server(certificate: _Certificate) -> Iterator[ServerProcess]:
    cert_file, key_file, _ = certificate
    server = start_server("--certfile", str(cert_file), "--keyfile", str(key_file), env=_TOKEN_ENV)
    yield server
    server.finish()


def test_a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout(
    certificate: _Certificate,
) -> None:
    """TCP connections to a ``--certfile`` server that never send a TLS ClientHello are closed
    after ``--handshake-timeout`` (websockets passes it to asyncio as ``ssl_handshake_timeout``),
    not held with their file descriptors for asyncio's own default of 60 s."""
    cert_file, key_file, _ = certificate
    server = start_server("--certfile", str(cert_file), "--keyfile", str(key_file), "--handshake-timeout", "1",
                          env=_TOKEN_ENV)
    try:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        process = psutil.Process(server.proc.pid)
        idle = process.num_fds()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        try:
            for connection in silent:
                connection.settimeout(scaled(30))  # well under asyncio's 60 s
                assert connection.recv(1) == b""  # closed by the server
        finally:
            for connection in silent:
                connection.close()
        eventually(lambda: process.num_fds() <= idle, what="the server's descriptors back to idle")
    finally:
        server.finish()


def _echo_over(url: str, context: ssl.SSLContext | None) -> str:
    async def run() -> str:
        async with await connect(url, TOKEN, ssl=context, auto_reconnect=False) as client:
            await client.execute(argv=[sys.executable, "-c", "print('over tls')"])
            return output_of(await collect(client))

    return asyncio.run(run())


def _trusting(cert_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_file))


def test_a_server_with_a_certificate_serves_wss(tls_server: ServerProcess, certificate: _Certificate) -> None:
    """``--certfile``/``--keyfile``: the server says ``wss://`` and a client that trusts the
    certificate runs a command over it."""
    assert tls_server.url.startswith("wss://127.0.0.1:")
    assert _echo_over(tls_server.url, _trusting(certificate[0])) == "over tls\n"


def test_a_certificate_file_holding_its_key_needs_no_keyfile(tmp_path: Path) -> None:
    """The key may follow the certificate in one PEM file."""
    cert_file, key_file, _ = _certificate(tmp_path)
    both = tmp_path / "both.pem"
    both.write_bytes(cert_file.read_bytes() + key_file.read_bytes())
    server = start_server("--certfile", str(both), env=_TOKEN_ENV)
    try:
        assert _echo_over(server.url, _trusting(cert_file)) == "over tls\n"
    finally:
        server.finish()


def _failure(url: str, context: ssl.SSLContext | None) -> str:
    """Why a connection to ``url`` failed, as a run or the terminal client says it."""
    with pytest.raises(Exception) as failure:
        _echo_over(url, context)
    assert isinstance(failure.value, OSError | CCExecError), repr(failure.value)
    return unreachable(url, failure.value)


def test_a_client_that_does_not_trust_the_certificate_is_refused_in_words(tls_server: ServerProcess) -> None:
    """The system's trust store does not hold a self-signed certificate: the handshake fails,
    and the reason says so and how to trust it (not "Operation not permitted", the errno 1
    an SSLCertVerificationError carries)."""
    assert _failure(tls_server.url, None) == (
        f"cannot reach {tls_server.url}: the server's TLS certificate is not trusted (self-signed certificate): "
        "set SSL_CERT_FILE to its certificate or its CA's"
    )


def test_a_plain_ws_client_is_told_the_server_speaks_tls(tls_server: ServerProcess) -> None:
    """``ws://`` to a TLS server gets no HTTP answer: the reason names wss:// (not websockets'
    "InvalidMessage: did not receive a valid HTTP response")."""
    plain = tls_server.url.replace("wss://", "ws://", 1)
    assert _failure(plain, None) == (
        f"cannot reach {plain}: the connection closed without an HTTP answer to the handshake "
        "(a server that speaks TLS needs a wss:// URL; a full server may close it too)"
    )


def test_the_terminal_client_trusts_ssl_cert_file(tls_server: ServerProcess, certificate: _Certificate) -> None:
    """A client uses the system's trust store, which ``SSL_CERT_FILE`` extends: the terminal
    client runs over ``wss://`` with the certificate named there (a kernel's runs do the same)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cc_executor_nb", "run", "--server", tls_server.url, "--quiet",
         "--", sys.executable, "-c", "print('terminal over tls')"],
        capture_output=True, text=True, timeout=scaled(60), check=False,
        env={**os.environ, **_TOKEN_ENV, "SSL_CERT_FILE": str(certificate[0])},
    )
    assert (proc.returncode, proc.stdout) == (0, "terminal over tls\n"), proc.stderr


def _start_failure(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, "--port", "0", "--no-history", *args], env={**os.environ, **_TOKEN_ENV},
        capture_output=True, text=True, timeout=scaled(30), check=False, stdin=subprocess.DEVNULL,
    )


def test_a_missing_certificate_is_an_error_naming_it(tmp_path: Path) -> None:
    """A certificate that is not there: exit 2 and one line naming the file and why."""
    missing = tmp_path / "missing.crt"
    proc = _start_failure("--certfile", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: cannot load the TLS certificate {missing}: No such file or directory"


def test_a_key_that_does_not_match_is_an_error(tmp_path: Path) -> None:
    """The key of another certificate: exit 2, the files named, before anything listens."""
    cert_file, _, _ = _certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key, _ = _certificate(other)
    proc = _start_failure("--certfile", str(cert_file), "--keyfile", str(other_key))
    assert proc.returncode == 2 and "listening" not in proc.stdout
    assert proc.stderr.strip() == (
        f"error: cannot load the TLS certificate {cert_file} (key {other_key}): "
        "[X509: KEY_VALUES_MISMATCH] key values mismatch"
    )


def test_an_encrypted_key_is_an_error_not_a_password_prompt(tmp_path: Path) -> None:
    """An encrypted key: exit 2 saying so (OpenSSL would otherwise ask for its password on the terminal)."""
    cert_file, key_file, key = _certificate(tmp_path)
    key_file.write_bytes(_pem_key(key, b"secret"))
    proc = _start_failure("--certfile", str(cert_file), "--keyfile", str(key_file))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("its key is encrypted"), proc.stderr


def test_a_keyfile_without_a_certificate_is_a_usage_error() -> None:
    proc = _start_failure("--keyfile", "/some/key.pem")
    assert proc.returncode == 2 and "--keyfile needs --certfile" in proc.stderr


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [("0.0.0.0", False, True), ("192.0.2.7", False, True), ("0.0.0.0", True, False),
     ("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False),
     ("::ffff:127.0.0.1", False, False), ("::ffff:192.0.2.7", False, True)],
)
def test_plain_ws_beyond_loopback_is_warned_about(host: str, tls: bool, warned: bool) -> None:
    """Serving ``ws://`` on an address other machines reach: a warning that names the way out."""
    warning = cleartext_warning(host, tls)
    assert (warning is not None) == warned
    if warning:
        assert "unencrypted" in warning and "--certfile" in warning and host in warning


def test_a_notebook_run_trusts_ssl_cert_file(
    tls_server: ServerProcess, certificate: _Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cc_executor_nb.run(server="wss://...")`` (what ``%ccexec -s`` runs) verifies the
    certificate against the trust store ``SSL_CERT_FILE`` extends; without it the run fails
    saying the certificate is not trusted."""
    monkeypatch.setenv("CCX_TLS_TOKEN", TOKEN)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    untrusted = cc_executor_nb.run("echo over wss", command=True, server=tls_server.url, token_env="CCX_TLS_TOKEN",
                                   wait=True, display=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    trusted = cc_executor_nb.run("echo over wss", command=True, server=tls_server.url, token_env="CCX_TLS_TOKEN",
                                 wait=True, display=False)
    assert (trusted.status, trusted.stdout) == ("completed", "over wss\n"), trusted.error
    assert untrusted.status != "completed" and untrusted.error is not None
    assert "the server's TLS certificate is not trusted (self-signed certificate)" in untrusted.error


@pytest.mark.parametrize(("token", "warned"), [("t0k", True), ("fifteen-chars-x", True), ("sixteen-chars-xy", False)])
def test_a_short_token_is_warned_about(token: str, warned: bool) -> None:
    """A token of fewer than 16 characters can be guessed: the server says so on stderr."""
    server = start_server(env={"CC_EXECUTOR_TOKEN": token})
    server.finish(signal.SIGTERM)
    warnings = [line for line in server.lines if "the token has only" in line]
    assert len(warnings) == (1 if warned else 0), server.lines
    if warned:
        assert warnings[0] == (
            f"warning: the token has only {len(token)} characters: it can be guessed; give 16 or more random "
            "characters, or let the server generate one"
        )


def test_a_job_server_whose_certificate_is_not_trusted_is_named_at_once(
    certificate: _Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job server the user started with ``--jobs --certfile``, whose certificate the kernel
    does not trust (SSL_CERT_FILE unset, and the certificate its runtime file names moved
    away): a durable run says so and how to trust it, where it waited the whole start
    timeout (60 s) and said only "no job server answers ... see its .log"."""
    cert_file, key_file, _ = certificate
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = start_server("--jobs", "--certfile", str(cert_file), "--keyfile", str(key_file))
    cert_file.rename(cert_file.with_name("moved.crt"))
    try:
        with pytest.raises(JobServerError) as refused:
            job_server()
    finally:
        server.finish(signal.SIGTERM)
    assert str(refused.value) == (
        f"the job server at {server.url} cannot be used: the server's TLS certificate is not trusted "
        "(self-signed certificate): set SSL_CERT_FILE to its certificate or its CA's"
    )


def test_a_durable_run_trusts_the_certificate_the_job_servers_runtime_file_names(
    certificate: _Certificate, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job server started with ``--jobs --certfile`` (self-signed), SSL_CERT_FILE unset: a
    durable run and the job table reach it, trusting the certificate its runtime file names,
    as ``stop`` does (job_server() refused it: the certificate was not trusted)."""
    cert_file, key_file, _ = certificate
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = start_server("--jobs", "--certfile", str(cert_file), "--keyfile", str(key_file))
    try:
        assert job_server().url == server.url
        run = cc_executor_nb.run("echo durable over wss", command=True, durable=True, wait=True, display=False)
        listed = cc_executor_nb.jobs.list()
    finally:
        server.finish(signal.SIGTERM)
    assert (run.status, run.stdout) == ("completed", "durable over wss\n"), run.error
    assert [job.job_id for job in listed] == [run.job_id]


def test_a_follower_of_a_tls_job_server_that_died_reaches_the_ws_one_it_starts(
    certificate: _Certificate, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable run on a ``--certfile`` job server, which is then SIGKILLed: the run starts the
    next job server itself (a kernel's: ``ws://``), which marks the job lost, and ends saying so
    (it dialled ``ws://`` with the old server's TLS context, which websockets refuses)."""
    cert_file, key_file, _ = certificate
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = start_server("--jobs", "--certfile", str(cert_file), "--keyfile", str(key_file))
    try:
        run = cc_executor_nb.run(fake_command("ticker", "3000", "0.01"), command=True, durable=True, display=False)
        eventually(lambda: run.job_id is not None and "tick 20" in run.stdout, what="the durable run streaming")
    finally:
        server.finish(signal.SIGKILL)
    run.wait(scaled(30))
    assert (run.status, run.error) == ("error", LOST_ERROR)
    restarted = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert restarted is not None and restarted.url.startswith("ws://")


def test_a_follower_of_a_tls_job_server_replaced_by_another_trusts_the_new_certificate(
    tmp_path: Path, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable run on a ``--certfile`` job server, which is SIGKILLed and replaced by another
    ``--certfile`` job server with its own self-signed certificate: the run follows the job
    there and ends as the job did, ``lost`` (it dialled the new server with the first one's TLS
    context, was refused "certificate verify failed" at every attempt and ran on, reconnecting,
    until its reconnect timeout, 5 minutes)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first_cert, first_key, _ = _certificate(tmp_path / "first")
    second_cert, second_key, _ = _certificate(tmp_path / "second")
    server = start_server("--jobs", "--certfile", str(first_cert), "--keyfile", str(first_key))
    try:
        run = cc_executor_nb.run(fake_command("ticker", "3000", "0.01"), command=True, durable=True, display=False)
        eventually(lambda: run.job_id is not None and "tick 20" in run.stdout, what="the durable run streaming")
        # The kernels' start lock, held meanwhile: the follower does not start a ws:// job server itself.
        with _held(runtime_dir / "cc_executor_nb-jobserver.lock"):
            server.finish(signal.SIGKILL)
            server = start_server("--jobs", "--certfile", str(second_cert), "--keyfile", str(second_key))
        run.wait(scaled(30))
    finally:
        server.finish(signal.SIGTERM)
    assert (run.status, run.error) == ("error", LOST_ERROR)
    assert "wss://" in server.url


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (flock) as a kernel starting the job server does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stop_a_tls_job_server_running_one_job(
    certificate: _Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, move_certificate: bool = False,
) -> tuple[str, str]:
    """Start ``--jobs --certfile`` with SSL_CERT_FILE unset, start a durable job there, then
    run ``stop``: (what stop printed, what it should name: ``URL (pid N)``)."""
    cert_file, key_file, _ = certificate
    runtime_dir = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = start_server("--jobs", "--certfile", str(cert_file), "--keyfile", str(key_file))
    try:
        info = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
        assert info is not None

        async def start_job() -> None:
            async with await connect(info.url, info.token, ssl=_trusting(cert_file), auto_reconnect=False) as client:
                await client.execute(argv=fake("ticker", "600", "0.1"), durable=True)

        asyncio.run(start_job())
        if move_certificate:
            cert_file.rename(cert_file.with_name("moved.crt"))
        stop = subprocess.run([*SERVER, "stop"], capture_output=True, text=True, timeout=scaled(60), check=False)
    finally:
        server.finish()
    assert stop.returncode == 0, stop.stderr
    return stop.stdout, f"{info.url} (pid {info.pid})"


def test_stop_counts_the_jobs_of_a_tls_job_server_without_ssl_cert_file(
    certificate: _Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop`` of a job server with a self-signed certificate, SSL_CERT_FILE unset, counts the
    jobs it cancelled: it trusts the certificate the runtime file names (it could not verify
    the server and said "it cancelled its running and paused jobs (it did not say how many)")."""
    said, server = _stop_a_tls_job_server_running_one_job(certificate, tmp_path, monkeypatch)
    assert said == f"stopped the job server at {server}; cancelled 1 running job\n"


def test_stop_says_why_it_cannot_count_the_jobs_of_a_tls_job_server(
    certificate: _Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the certificate the runtime file names is gone, ``stop`` still stops the server and
    says why it cannot tell how many jobs it cancelled, and how to let it (it said the server
    "did not say how many", which it never was asked)."""
    said, server = _stop_a_tls_job_server_running_one_job(certificate, tmp_path, monkeypatch, move_certificate=True)
    assert said == (
        f"stopped the job server at {server}; it cancelled its running and paused jobs (how many is not "
        "known: the server's TLS certificate is not trusted (self-signed certificate): set SSL_CERT_FILE "
        "to its certificate or its CA's)\n"
    )
