"""The load-balanced topology of deploy/compose.yaml, built on loopback without Docker.

    .venv/bin/python -m pytest tests/deploy/test_load_balancer.py

nginx (Debian's package, run as the current user with every path in a temporary folder) serves
deploy/nginx.conf in front of two replicas started as `python -m app`, each on a free port of
127.0.0.1. Only the lines naming Docker's network are swapped, so the balancer under test is the
shipped one. Under continuous load through nginx, one replica gets SIGTERM and must drain (readiness
503, in-flight requests finished, exit 0) without a single request failing at the client; restarted
on the same port, it must be back in rotation. Every loop here is bounded; all traffic is loopback.

Without nginx the test is skipped with the reason, except under CI (env CI set), where it fails:
a CI run must not pass without having exercised the balancer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
DIGIT_PNG = Path(__file__).resolve().parent / "data" / "mnist-t10k-00000-label-7.png"
DIGIT, NUMBER = 7, 5  # the image's label, and the addend every request sends

DRAIN_DELAY_S = 2.0  # DIGITSUM_DRAIN_DELAY_S of the replicas: readiness 503 before closing
GRACEFUL_TIMEOUT_S = 10.0  # DIGITSUM_GRACEFUL_TIMEOUT_S: in-flight requests' deadline
START_TIMEOUT_S = 45.0  # one replica, from exec to ready, on a busy 2-core machine
EXIT_TIMEOUT_S = DRAIN_DELAY_S + GRACEFUL_TIMEOUT_S + 5.0
REJOIN_TIMEOUT_S = 20.0  # nginx retries a failed server after fail_timeout (5 s in nginx.conf)
LOAD_WORKERS = 4
LOAD_PAUSE_S = 0.01  # between one worker's requests: steady load, yet modest on shared CPUs
LOAD_DEADLINE_S = 90.0  # the load stops by itself even if the test body never reaches stop()


def _nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    message = "nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: under CI this test must run")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _sub_once(pattern: str, replacement: str | Callable[[re.Match[str]], str], text: str) -> str:
    """re.sub that insists on exactly one match, so a drift in nginx.conf fails loudly here."""
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"deploy/nginx.conf: expected one line matching {pattern!r}, found {count}"
    return new


def render_nginx_conf(listen_port: int, upstream_ports: list[int], workdir: Path) -> str:
    """deploy/nginx.conf with Docker's names swapped for loopback ports and paths in workdir."""
    text = NGINX_CONF.read_text()
    match = re.search(r"^(\s*)server digitsum:8000 resolve( [^;]*);$", text, flags=re.MULTILINE)
    assert match, "deploy/nginx.conf: no `server digitsum:8000 resolve ...;` line"
    indent, params = match.groups()
    servers = "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)
    text = text.replace(match.group(0), servers)
    text = _sub_once(r"^\s*resolver [^;]*;\n", "", text)  # loopback needs no DNS
    text = _sub_once(r"^(\s*)listen 8080;$", rf"\1listen 127.0.0.1:{listen_port};", text)
    # Workers run as the current user: as root, nginx would otherwise switch them to the
    # image's `nginx` user (absent here); as anyone else it cannot switch at all.
    user = "user root;" if os.geteuid() == 0 else ""
    text = _sub_once(r"^user [^;]*;$", user, text)
    top = [f"error_log {workdir}/error.log info;", f"pid {workdir}/nginx.pid;"]
    text = _sub_once(r"^error_log [^;]*;$", "\n".join(top), text)
    paths = [f"access_log {workdir}/access.log digitsum;"] + [
        f"{kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]
    return _sub_once(
        r"^(\s*)access_log /dev/stdout digitsum;$",
        lambda m: "\n".join(m.group(1) + line for line in paths),
        text,
    )


def _wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _readiness(port: int) -> tuple[int, str] | None:
    """/health/ready's (status code, "status" field), or None when the port refuses connections."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2.0)
    except httpx.TransportError:
        return None
    return response.status_code, str(response.json().get("status"))


class Replica:
    """One `python -m app` process on a fixed loopback port, as `make serve` starts it."""

    def __init__(self, name: str, port: int, workdir: Path) -> None:
        self.name, self.port, self.workdir = name, port, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSUM_")}
        env.update(
            DIGITSUM_HOST="127.0.0.1",
            DIGITSUM_PORT=str(self.port),
            DIGITSUM_MODEL_PATH=str(REPO_ROOT / "models" / "digitsum.pt"),
            DIGITSUM_DEVICE="cpu",
            DIGITSUM_TORCH_THREADS="1",
            DIGITSUM_PREPROCESS_THREADS="1",
            DIGITSUM_DRAIN_DELAY_S=str(DRAIN_DELAY_S),
            DIGITSUM_GRACEFUL_TIMEOUT_S=str(GRACEFUL_TIMEOUT_S),
            DIGITSUM_LOG_LEVEL="info",
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(
                    f"replica {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            return _readiness(self.port) == (200, "ready")

        _wait_until(ready, START_TIMEOUT_S, f"replica {self.name} to become ready")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a second signal would skip the drain
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Load:
    """LOAD_WORKERS threads POSTing the digit to /predict through nginx until stopped."""

    url: str
    image: bytes
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wrong_answers: list[dict[str, object]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        deadline = time.monotonic() + LOAD_DEADLINE_S
        for index in range(LOAD_WORKERS):
            thread = threading.Thread(target=self._work, args=(deadline,), name=f"load-{index}")
            thread.start()
            self.threads.append(thread)

    def _work(self, deadline: float) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post(
                        "/predict",
                        files={"image": ("seven.png", self.image, "image/png")},
                        data={"number": str(NUMBER)},
                    )
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        body = response.json()
                        if (body["digit"], body["sum"]) != (DIGIT, DIGIT + NUMBER):
                            self.wrong_answers.append(body)
                time.sleep(LOAD_PAUSE_S)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15.0)


def _served_by(access_log: Path, port: int, since_line: int = 0) -> int:
    """Requests whose final upstream attempt was 127.0.0.1:port and answered 200."""
    count = 0
    lines = access_log.read_text().splitlines()[since_line:]
    for line in lines:
        upstream = re.search(r"upstream=(\S.*?) upstream_status=(\S.*?) rt=", line)
        if upstream is None:
            continue
        last_addr = upstream.group(1).split(",")[-1].strip()
        last_status = upstream.group(2).split(",")[-1].strip()
        count += last_addr == f"127.0.0.1:{port}" and last_status == "200"
    return count


def _line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Replica, Replica, Path]]:
    """nginx on a loopback port in front of replicas a and b; yields (url, a, b, workdir).

    Shared by the tests of this module: each leaves both replicas running and in rotation.
    """
    nginx = _nginx_binary()
    tmp_path = tmp_path_factory.mktemp("lb")
    a = Replica("a", _free_port(), tmp_path)
    b = Replica("b", _free_port(), tmp_path)
    lb_port = _free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(lb_port, [a.port, b.port], tmp_path))
    nginx_proc: subprocess.Popen[bytes] | None = None
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        check = subprocess.run(
            [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, f"nginx -t rejected the rendered config:\n{check.stderr}"
        nginx_proc = subprocess.Popen(
            [
                nginx,
                "-p",
                str(tmp_path),
                "-c",
                str(conf),
                "-e",
                str(tmp_path / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{lb_port}"

        def lb_up() -> bool:
            assert nginx_proc is not None
            if nginx_proc.poll() is not None:
                pytest.fail(f"nginx exited: {(tmp_path / 'error.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/lb/health", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        _wait_until(lb_up, 10.0, "nginx to answer")
        yield url, a, b, tmp_path
    finally:
        if nginx_proc is not None and nginx_proc.poll() is None:
            nginx_proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                nginx_proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                nginx_proc.kill()
                nginx_proc.wait()
        a.stop()
        b.stop()


def _start_slow_upload(port: int, image: bytes) -> tuple[socket.socket, bytes]:
    """Send a /predict request's headers and half its body; return the socket and the rest."""
    boundary = "digitsumslowupload"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="number"\r\n\r\n{NUMBER}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="7.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=GRACEFUL_TIMEOUT_S)
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def _multipart_of_size(total: int) -> tuple[bytes, str]:
    """A /predict body of exactly `total` bytes (the image field is padding) and its type."""
    boundary = "digitsumsizecheck"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="number"\r\n\r\n{NUMBER}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + b"\0" * (total - len(head) - len(tail)) + tail
    assert len(body) == total
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
def test_body_limit_matches_the_app(topology: tuple[str, Replica, Replica, Path]) -> None:
    """nginx passes a body of exactly the app's limit on to the app, and refuses one byte more."""
    url = topology[0]
    limit = 20 * 1024 * 1024  # DIGITSUM_MAX_UPLOAD_BYTES' default; nginx: client_max_body_size 20m
    with httpx.Client(base_url=url, timeout=30.0) as client:
        body, content_type = _multipart_of_size(limit)
        at_limit = client.post("/predict", content=body, headers={"Content-Type": content_type})
        body, content_type = _multipart_of_size(limit + 1)
        over = client.post("/predict", content=body, headers={"Content-Type": content_type})

    # At the limit the app itself answers: the padding is no image.
    assert at_limit.status_code == 400, at_limit.text
    assert at_limit.json()["error"]["code"] == "invalid_image"
    # One byte over, nginx answers, in the app's error shape, without bothering a replica.
    assert over.status_code == 413, over.text
    error = over.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["request_id"] == over.headers["X-Request-ID"]
    assert "20971520 bytes" in error["message"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_under_load_drains_without_failed_requests(
    topology: tuple[str, Replica, Replica, Path],
) -> None:
    url, a, b, workdir = topology
    access_log = workdir / "access.log"
    began = time.monotonic()
    load = Load(url, DIGIT_PNG.read_bytes())
    load.start()
    try:
        # Both replicas in rotation before anything happens.
        _wait_until(
            lambda: _served_by(access_log, a.port) >= 5 and _served_by(access_log, b.port) >= 5,
            15.0,
            "both replicas to serve traffic through nginx",
        )
        # A request in flight on replica a when it is told to stop: headers and half a body.
        slow_sock, slow_rest = _start_slow_upload(a.port, DIGIT_PNG.read_bytes())
        time.sleep(0.2)  # let the server parse the headers and start the request cycle

        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        readiness: list[tuple[float, tuple[int, str] | None]] = []
        while time.monotonic() - terminated < EXIT_TIMEOUT_S:
            answer = _readiness(a.port)
            readiness.append((time.monotonic() - terminated, answer))
            if answer is None:  # the listener is closed: graceful shutdown has begun
                break
            time.sleep(0.05)
        listener_closed_after = readiness[-1][0]

        # The in-flight request still gets its whole answer after the listener has closed, and
        # the process waits for it: it is still running when the rest of the body arrives.
        assert a.proc.poll() is None, "replica a exited with a request still in flight"
        slow_sock.sendall(slow_rest)
        slow_response = _read_response(slow_sock)
        a.proc.wait(timeout=EXIT_TIMEOUT_S)
        exited_after = time.monotonic() - terminated
        assert a.proc.returncode == 0, f"replica a exited with {a.proc.returncode}:\n{a.log_tail()}"

        # Restarted on the same port, it comes back into rotation.
        a.start()
        a.wait_ready()
        rejoin_from = _line_count(access_log)
        _wait_until(
            lambda: _served_by(access_log, a.port, since_line=rejoin_from) >= 5,
            REJOIN_TIMEOUT_S,
            "the restarted replica to get traffic through nginx again",
        )
        served_after_rejoin = _served_by(access_log, a.port, since_line=rejoin_from)
    finally:
        load.stop()
    elapsed = time.monotonic() - began

    # Readiness flips at once (allowing for the signal's delivery) and never flips back.
    draining = [i for i, (_, answer) in enumerate(readiness) if answer == (503, "draining")]
    assert draining, f"readiness never answered 503 draining after SIGTERM: {readiness}"
    assert readiness[draining[0]][0] < 1.0, f"readiness flipped late: {readiness}"
    after_flip = {answer for _, answer in readiness[draining[0] :]}
    assert after_flip == {(503, "draining"), None}, f"readiness after the flip: {readiness}"
    assert listener_closed_after >= DRAIN_DELAY_S - 0.5, (
        f"listener closed {listener_closed_after:.2f} s after SIGTERM, before the drain delay"
    )
    # Started before SIGTERM, so served to the end with a real answer, although its body arrived
    # after the listener had closed.
    head, _, body = slow_response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    assert status_line == "HTTP/1.1 200 OK", f"in-flight request: {slow_response!r}"
    prediction = json.loads(body)
    assert (prediction["digit"], prediction["sum"]) == (DIGIT, DIGIT + NUMBER), prediction
    assert exited_after <= EXIT_TIMEOUT_S
    # No upstream connection was cut under a request (a refused connect after the listener
    # closed is fine: nothing was sent, and nginx retried elsewhere).
    cut = [
        line
        for line in (workdir / "error.log").read_text().splitlines()
        if re.search(r"prematurely closed|reset by peer|broken pipe", line, flags=re.IGNORECASE)
    ]
    assert cut == [], f"nginx saw connections cut under requests: {cut[:3]}"
    assert load.failures == [], f"{len(load.failures)} failed requests, first: {load.failures[:5]}"
    assert load.wrong_answers == [], f"wrong answers: {load.wrong_answers[:3]}"
    assert load.statuses[200] >= 50, f"too little load to mean anything: {dict(load.statuses)}"
    retried = sum(
        "," in line.split("upstream=")[-1].split(" upstream_status=")[0]
        for line in access_log.read_text().splitlines()
    )
    print(
        f"\nload balancer: {load.statuses[200]} requests, 0 failed, {retried} retried by nginx; "
        f"replica a: listener closed {listener_closed_after:.1f} s after SIGTERM, exited 0 after "
        f"{exited_after:.1f} s, in-flight upload answered {status_line!r}, "
        f"{served_after_rejoin} served after restart; {elapsed:.0f} s under load"
    )
