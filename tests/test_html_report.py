"""`lifelong report --html`: the page of two tiny runs holds their numbers, needs no network, and
renders in headless Chromium (Debian's `chromium`, driven over the DevTools protocol on a pipe) with
every image loaded, no console error and no request made. Bad input is one line."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import lifelong
from lifelong.errors import UserError
from lifelong.html_report import write_html_report
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli

WINDOW = (1200, 900)  # the viewport the screenshot is taken of
CDP_TIMEOUT = 60.0  # seconds for one DevTools answer (a cold Chromium start on a busy 2-core machine)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("html")
    configs = [
        small_config_dict(tmp, name="naive"),
        small_config_dict(tmp, name="replay", methods=[{"name": "replay", "replay_fraction": 0.5}]),
    ]
    return [lifelong.run(lifelong.parse_config(c), show_progress=False).path for c in configs]


@pytest.fixture(scope="module")
def page(two_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    write_html_report(two_runs, out)
    return out


def test_the_page_holds_the_runs_numbers_and_needs_nothing_from_outside(page, two_runs):
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text) and "<script" not in text
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) == 1 + 2 * len(two_runs)  # the frontier; a heatmap and curves per run
    for src in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix) and base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    for run in two_runs:
        summary = json.loads((run / "summary.json").read_text())
        row = re.search(rf"<tr><td>{run.name}</td>(.*?)</tr>", text).group(1)
        assert f"<td>{summary['metrics']['AA']:.3f}</td>" in row
        assert f"<td>{summary['train_seconds']:.1f}</td>" in row
        assert f"<pre>{html.escape((run / 'config.yaml').read_text())}</pre>" in text


def test_not_a_run_or_an_unfinished_run_is_one_line(two_runs, tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="not a run directory"):
        write_html_report([two_runs[0], tmp_path], tmp_path / "out.html")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_runs[0], unfinished)
    (unfinished / "summary.json").unlink()
    code, err = run_cli(
        ["report", "--html", str(tmp_path / "out.html"), str(unfinished)], monkeypatch, capsys
    )
    assert_one_line_error(code, err, "unfinished", "is the run finished?")
    assert not (tmp_path / "out.html").exists()


def test_the_cli_writes_the_page(two_runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.html"
    code, _ = run_cli(["report", "--html", str(out), *map(str, two_runs)], monkeypatch, capsys)
    assert code == 0 and out.read_text().startswith("<!DOCTYPE html>")


def chromium_binary() -> str:
    """Debian's chromium (scripts/test.sh installs it); its absence fails where data is required (CI)."""
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed: apt-get install -y chromium (scripts/test.sh does it)"
        if os.environ.get("LIFELONG_REQUIRE_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe: JSON messages ending in NUL, written
    to the browser's fd 3 and read from its fd 4. Events are kept in `events`."""

    def __init__(self, binary: str, profile: Path):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
        args += [f"--user-data-dir={profile}", "--no-first-run", "about:blank"]

        def child_fds() -> None:  # the pipe ends onto the child's fds 3 and 4, copied first: no clash
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            args,
            pass_fds=(3, 4, to_browser_r, from_browser_w),  # left open past preexec_fn
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.from_browser], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.from_browser, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params}
        os.write(
            self.to_browser,
            json.dumps(request | ({"sessionId": session} if session else {})).encode() + b"\0",
        )
        deadline = time.monotonic() + CDP_TIMEOUT
        while True:
            reply = self.message(deadline)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + CDP_TIMEOUT
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self.message(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


def console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(params["entry"]["text"])
    return out


def test_the_page_renders_in_headless_chromium_with_every_image(page, tmp_path):
    from PIL import Image

    start = time.perf_counter()
    browser = DevTools(chromium_binary(), tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        width, height = WINDOW
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", session, url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        images = browser.call(
            "Runtime.evaluate",
            session,
            expression="[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])",
            returnByValue=True,
        )["result"]["value"]
        shot = base64.b64decode(browser.call("Page.captureScreenshot", session, format="png")["data"])
    finally:
        browser.close()
    assert len(images) == 5 and all(done and w > 0 and h > 0 for done, w, h in images), images
    assert console_errors(browser.events) == []
    requested = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert [url for url in requested if not url.startswith("data:") and url != page.as_uri()] == []
    picture = Image.open(io.BytesIO(shot)).convert("L")
    assert picture.size == WINDOW
    histogram = picture.histogram()
    assert max(histogram) < 0.97 * sum(histogram)  # not one colour: text and figures drawn
    assert sum(1 for n in histogram if n) > 32
    print(f"chromium: {time.perf_counter() - start:.1f} s")
