"""The dashboard's server without a browser: loopback only, the token on every request (none:
401, a wrong one: 403), a Host header naming its own loopback address, GET alone, one page
with nothing from elsewhere; and its data: a cluster whose node does not answer is shown
as such. The page itself is tested in Chromium against a real cluster
(tests/cluster/test_top_dashboard_e2e.py)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import unreachable_cluster, wait_until

from dlvm_cluster.dashboard.live import Collector
from dlvm_cluster.dashboard.server import Dashboard
from dlvm_cluster.state import ClusterState


@pytest.fixture
def dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dashboard]:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLVM_NO_AGENT", "1")
    unreachable_cluster(ClusterState.for_name("quiet"))
    collector = Collector(refresh=0.2, overview=0.2)
    server = Dashboard(collector)
    collector.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        collector.stop()


def _get(
    server: Dashboard, path: str, *, host: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Host": host} if host is not None else {}
    connection.request(method, path, headers=headers)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body


def test_only_the_token_opens_it(dashboard: Dashboard) -> None:
    token = dashboard.token
    other = Dashboard(Collector())
    other.server_close()
    assert len(token) >= 32 and other.token != token  # random, each time
    assert _get(dashboard, "/")[0] == 401
    assert _get(dashboard, "/api/state")[0] == 401
    assert _get(dashboard, "/?token=")[0] == 401
    assert _get(dashboard, "/?token=" + token[:-1] + "x")[0] == 403
    assert _get(dashboard, "/api/state?token=nope")[0] == 403
    assert _get(dashboard, f"/?token={token}")[0] == 200
    assert _get(dashboard, f"/api/state?token={token}")[0] == 200


def test_a_page_of_another_site_is_refused(dashboard: Dashboard) -> None:
    """DNS rebinding: a name of the attacker's pointed at 127.0.0.1 sends its own Host."""
    path = f"/api/state?token={dashboard.token}"
    assert _get(dashboard, path, host=f"evil.example:{dashboard.port}")[0] == 403
    assert _get(dashboard, path, host="127.0.0.1")[0] == 403  # another port's origin
    assert _get(dashboard, path, host=f"localhost:{dashboard.port}")[0] == 200


def test_nothing_can_be_changed_through_it(dashboard: Dashboard) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _get(dashboard, f"/?token={dashboard.token}", method=method)[0] == 405
        assert _get(dashboard, "/", method=method)[0] == 401


def _other_addresses() -> list[str]:
    """This machine's addresses other than 127.0.0.1 (127.0.0.2 is loopback too)."""
    listed = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", listed)
    return sorted({address for address in found if address != "127.0.0.1"} | {"127.0.0.2"})


def test_it_listens_on_loopback_only(dashboard: Dashboard) -> None:
    assert dashboard.socket.getsockname()[0] == "127.0.0.1"
    for address in _other_addresses():
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.settimeout(5)
            probe.connect((address, dashboard.port))


def test_the_page_needs_nothing_from_elsewhere(dashboard: Dashboard) -> None:
    status, headers, body = _get(dashboard, f"/?token={dashboard.token}")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    nonce = re.search(r"'nonce-([^']+)'", headers["content-security-policy"])
    assert nonce is not None
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"  # the token never leaves in a Referer
    # One document, its script and style inline: a src or href names data only (the empty
    # icon, so that the browser does not ask for /favicon.ico).
    assert re.findall(r"\s(?:src|href)\s*=\s*\"([^\"]*)\"", page) == ["data:,"]
    assert len(re.findall(r"\s(?:src|href)\s*=", page)) == 1
    assert page.count(f'nonce="{nonce.group(1)}"') == 2
    assert "NONCE" not in page and "/*SCRIPT*/" not in page
    # A new nonce every time the page is served.
    again = _get(dashboard, f"/?token={dashboard.token}")[1]["content-security-policy"]
    assert nonce.group(1) not in again


def test_a_node_that_does_not_answer_is_shown_as_such(dashboard: Dashboard) -> None:
    def quiet_node() -> dict[str, object] | None:
        body = _get(dashboard, f"/api/state?token={dashboard.token}")[2]
        clusters = json.loads(body)["clusters"]
        nodes = clusters[0]["nodes"] if clusters else []
        sample = nodes[0]["sample"] if nodes else None
        return sample if sample and nodes[0]["history"]["t"] else None

    sample = wait_until(quiet_node, 30)
    assert sample["answered"] is False
    assert sample["cpu_percent"] is None
    assert sample["error"]


def _dashboard_command(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dlvm_cluster", "dashboard", *args],
        env={**os.environ, "DLVM_HOME": str(home), "NO_COLOR": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_it_opens_the_browser_on_its_tokened_url(tmp_path: Path) -> None:
    """Python's webbrowser runs $BROWSER: here a script that writes down what it was given."""
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    process = _dashboard_command(tmp_path / "home", BROWSER=f"{browser} %s")
    try:
        assert process.stdout is not None
        url = process.stdout.readline().removeprefix("dashboard: ").strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{32}", url), url
        wait_until(lambda: opened.exists() and opened.read_text().strip(), 30)
        assert opened.read_text().strip() == url
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0  # Ctrl-C ends it, and that is no failure
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        process = _dashboard_command(tmp_path / "home", "--port", port, "--no-browser")
        err = process.communicate(timeout=60)[1]
    assert process.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_a_damaged_cluster_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record the code does not expect (here a node without its fields: a TypeError deep
    in the inventory) is shown as that cluster's problem; the page goes on for the rest."""
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLVM_NO_AGENT", "1")
    unreachable_cluster(ClusterState.for_name("quiet"))
    broken = ClusterState.for_name("broken")
    broken.create()
    broken.inventory_path.write_text('{"cluster": "broken", "nodes": [{"name": 7}]}')
    collector = Collector(refresh=0.2, overview=0.2)
    collector.start()
    try:

        def both() -> dict[str, dict[str, object]] | None:
            clusters = {c["name"]: c for c in collector.snapshot()["clusters"]}
            quiet = clusters.get("quiet", {}).get("nodes") or [{}]
            return clusters if "broken" in clusters and quiet[0].get("sample") else None

        clusters = wait_until(both, 30)
    finally:
        collector.stop()
    assert "TypeError" in str(clusters["broken"]["problem"])  # said, not raised
    assert clusters["broken"]["nodes"] == []
