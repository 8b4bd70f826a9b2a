"""`rsretrieve serve` as a process: the address taken before anything is loaded, and how it stops."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_is_one_line_and_exit_2_before_serving(small_workspace):
    # it printed "serving ... Ctrl-C stops", then uvicorn's "[Errno 98] ... address already in use", exit code 3
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", "--workspace", small_workspace, "--port", port, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"rsretrieve serve: error: cannot listen on 127.0.0.1:{port}: Address "
                                             "already in use"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)],
                         ids=["ctrl-c", "sigterm"])
def test_serve_answers_on_its_port_and_stops_as_documented(small_workspace, sig, code):
    # README: 0 on Ctrl-C, 143 on SIGTERM (uvicorn raises it again once stopped: killed by it, as a shell shows)
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "rsretrieve.cli", "serve", "--workspace", str(small_workspace),
                          "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
    try:
        line = p.stdout.readline()  # after the model, the index and the kernels are loaded
        assert line.startswith(f"serving {small_workspace} (model default, ") and f"http://127.0.0.1:{port} " in line
        for _ in range(100):  # uvicorn's loop starts serving the socket just after
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.1)
        assert health["status"] == "ok" and health["model"] == "default"
        # a monitor's HEAD probe (it was a 405): uvicorn sends the headers of GET, no body
        head = urllib.request.Request(f"http://127.0.0.1:{port}/health", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"" and resp.headers["content-type"] == "application/json"
        p.send_signal(sig)
        assert p.wait(timeout=60) == code
        assert "Traceback" not in p.stderr.read()
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_a_bad_upload_limit_names_the_flag(small_workspace, value):
    # inf passed the CLI's check and got create_app's "max_upload_mb must be ..."
    r = run_cli("serve", "--workspace", small_workspace, "--max-upload-mb", value, "--port", _free_port())
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"rsretrieve serve: error: --max-upload-mb must be a number of MB > 0, "
                                             f"got {float(value):g}"]


@pytest.mark.parametrize("value", ["1e-7", "9.99e-7"])
def test_an_upload_limit_under_one_byte_is_refused_at_start(small_workspace, value):
    # it rounded to a limit of 0 bytes: a service that refused every upload (413)
    r = run_cli("serve", "--workspace", small_workspace, "--max-upload-mb", value, "--port", _free_port())
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"rsretrieve serve: error: --max-upload-mb must be at least 1e-06 (one "
                                             f"byte), got {float(value):g}"]


def test_listen_takes_every_address_of_the_host_and_a_second_service_is_refused_at_once():
    # the socket was bound but left to uvicorn to listen on, after seconds of loading: with SO_REUSEADDR a second
    # `serve` on the port bound too, printed "serving ...", and failed later; and only the first address of a host
    # was bound (`localhost` as ::1 alone where /etc/hosts lists it first)
    from rsretrieve.cli import UsageError, _listen

    port = _free_port()
    first = _listen("", port, "")  # every interface: 0.0.0.0, and :: where the machine has IPv6
    try:
        assert {s.family for s in first} == {i[0] for i in socket.getaddrinfo(None, port, type=socket.SOCK_STREAM,
                                                                                flags=socket.AI_PASSIVE)}
        with pytest.raises(UsageError, match=rf"^cannot listen on 127.0.0.1:{port}: Address already in use$"):
            _listen("127.0.0.1", port, "127.0.0.1")
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # queued in the backlog while loading
            pass
    finally:
        for s in first:
            s.close()
    again = _listen("127.0.0.1", port, "127.0.0.1")  # free again once closed
    for s in again:
        s.close()


def test_listen_skips_an_address_family_the_machine_lacks(monkeypatch):
    # IPv6 disabled (a container; ipv6.disable=1): `localhost` listed as ::1 too, or '' as ::, was refused whole
    import errno

    from rsretrieve.cli import _listen

    real = socket.socket

    def no_ipv6(family=socket.AF_INET, *a, **k):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *a, **k)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    socks = _listen("", _free_port(), "")
    try:
        assert [s.family for s in socks] == [socket.AF_INET]
    finally:
        for s in socks:
            s.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a write error on stdout")
def test_a_write_error_on_the_banner_names_standard_output(small_workspace):
    # `rsretrieve serve > out.txt` on a full disk said "error: WORKSPACE: No space left on device"
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "rsretrieve.cli", "serve", "--workspace", str(small_workspace),
                            "--port", str(_free_port())], stdout=full, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["rsretrieve serve: error: standard output: No space left on device"]


def test_every_interface_is_shown_as_an_address(small_workspace):
    # --host '' said "cannot listen on :PORT" (and served on "http://:PORT")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", "--workspace", small_workspace, "--host", "", "--port", port, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"rsretrieve serve: error: cannot listen on 0.0.0.0:{port}: Address already in use"]


def test_an_ipv4_address_of_the_host_on_no_interface_is_an_error_not_skipped(monkeypatch):
    # a name resolving to 10.9.9.9 (not this machine's) and 127.0.0.1 was served on 127.0.0.1 alone, unsaid
    from rsretrieve.cli import UsageError, _listen

    port = _free_port()
    real = socket.getaddrinfo

    def two(host, *a, **k):
        if host != "myhost":
            return real(host, *a, **k)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.9.9", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", two)
    with pytest.raises(UsageError, match=rf"^cannot listen on myhost:{port}: Cannot assign requested address$"):
        _listen("myhost", port, "myhost")
    again = _listen("127.0.0.1", port, "127.0.0.1")  # nothing was left bound
    for sock in again:
        sock.close()
