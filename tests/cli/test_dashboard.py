"""`hub dashboard` as a user starts it, without a browser: the token it needs off loopback, what
it answers for another `Host` then, its actions' guard, the page of a state directory no hub used
yet, and a port in use said in one line. (The page itself, in a browser against a hub doing real
work: tests/e2e/test_dashboard.py.)"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hubtests import hub_env

pytestmark = pytest.mark.timeout(60)

HUB = [sys.executable, "-m", "hub"]


def _status(url: str, method: str = "GET", **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, method=method, headers=headers, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_off_loopback_it_needs_a_token_then_serves_any_host_that_has_it(tmp_path: Path) -> None:
    env = hub_env(tmp_path)
    refused = subprocess.run(
        [*HUB, "dashboard", "--no-browser", "--host", "0.0.0.0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "hub dashboard: refusing to listen on 0.0.0.0 without a token: give one with --token T "
        "([http] token in hub.toml or HUB_HTTP_TOKEN also do), or leave --host out for loopback only"
    ]

    args = [*HUB, "dashboard", "--no-browser", "--host", "0.0.0.0", "--token", "s3cret"]
    dashboard = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert dashboard.stdout is not None
        line = dashboard.stdout.readline()
        assert line.startswith("hub dashboard: http://") and line.strip().endswith("/?token=s3cret"), line
        port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        local = f"http://127.0.0.1:{port}"
        other = {"Host": f"dashboard.example.com:{port}"}
        assert _status(f"{local}/", **other)[0] == 401
        code, page = _status(f"{local}/?token=s3cret", **other)
        assert code == 200
        # A state directory no hub used yet: the page says so, and the store raises nothing.
        assert "no shared hub process is running for this state directory" in page
        assert "the store:" not in page
        bearer = {**other, "Authorization": "Bearer s3cret"}
        assert _status(f"{local}/action", "POST", **bearer)[0] == 403  # not from the page (htmx)
        foreign = {**bearer, "HX-Request": "true", "Origin": "http://evil.example.com"}
        assert _status(f"{local}/action", "POST", **foreign)[0] == 403
        code, answer = _status(f"{local}/action", "POST", **{**bearer, "HX-Request": "true"})
        assert code == 200 and "no shared hub process answers, so nothing was done" in answer
        assert _status(f"{local}/file?path=/etc/passwd", **bearer)[0] == 404  # no panel links to it

        taken = subprocess.run(
            [*HUB, "dashboard", "--no-browser", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert taken.returncode == 1
        assert taken.stderr.strip().splitlines() == [
            f"hub: port {port} on 127.0.0.1 is already in use: stop what listens there, or choose "
            "another port with --port N, or no --port for a free one"
        ]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
