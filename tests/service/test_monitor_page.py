"""The live call monitor at /monitor: its page and assets, and the page itself in headless Chromium.

The browser test runs the real service (uvicorn, the tiny bundle, the embedded store, an alert rule),
opens /monitor, enters the API key, replays a sample call over REST and reads what the page shows:
every utterance in order, each turn's labels as the service answered them, the alerts the rule fired,
the sentiment trend, and hostile text shown as text. It skips where Chromium or chromedriver is missing
(``scripts/system-deps.sh`` installs them with apt-get). To keep the screenshot:
``TURNWISE_MONITOR_SCREENSHOT=benchmarks/results/monitor.png pytest tests/service/test_monitor_page.py``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "service" / "monitor"
KEY = "monitor-key-1"
HOSTILE = '<img src=x onerror="window.__pwned = 1"><b>refund</b> & "now"'
RULES = """\
rules:
  - name: negative_customer
    severity: warning
    speaker: customer
    when: ["sentiment.negative >= 0.0"]
"""
WAIT_S = 30


def test_page_and_assets_are_served_without_a_key_and_data_is_not(live: Callable[..., Any]) -> None:
    server = live(api_keys=[KEY])
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/monitor")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert set(refs) == {"data:,", "monitor/monitor.css", "monitor/monitor.js"}
        for name, kind in (("monitor.js", "text/javascript"), ("monitor.css", "text/css")):
            asset = c.get(f"/monitor/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
            assert asset.content == (ASSETS / name).read_bytes()
        for name in ("index.html", "__init__.py", "..%2Fapp.py", "nope.js"):
            assert c.get(f"/monitor/{name}").status_code == 404, name
        assert c.get("/v1/dialogues").status_code == 401
        assert c.get("/v1/dialogues", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        spec = c.get("/openapi.json").json()
        assert not any(path.startswith("/monitor") for path in spec["paths"])


def test_assets_load_nothing_from_elsewhere_and_never_parse_html() -> None:
    for path in ASSETS.glob("*.*"):
        if path.suffix not in {".html", ".js", ".css"}:
            continue
        text = path.read_text()
        hosts = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}", text)) - {"http://www.w3.org"}
        assert not hosts, f"{path.name} refers to {hosts}"
        assert "@import" not in text and "url(" not in text, path.name
    js = (ASSETS / "monitor.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink


def test_assets_ship_in_the_package() -> None:
    """pyproject's package data covers every asset (an editable install would hide a missing pattern)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = config["package-data"]
    patterns = [*data.get("*", []), *data.get("service.monitor", [])]
    assert (ASSETS / "__init__.py").exists()  # a package, so packages.find includes it
    assert any(fnmatch.fnmatch("service.monitor", inc) for inc in config["packages"]["find"]["include"])
    for name in ("index.html", "monitor.js", "monitor.css"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is not package data"


# ---- the page in a browser (the ``browser`` fixture is in conftest.py) -------------------------------


def wait_for(driver: Any, check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with what the page said."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(_: Any) -> Any:
        try:
            return check()
        except StaleElementReferenceException:
            return None

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(attempt)
    except TimeoutException:
        notice = driver.execute_script("return document.getElementById('notice').textContent")
        console = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"page never showed {what}; notice={notice!r}; console={console}")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def enter_key(driver: Any, key: str) -> None:
    box = css(driver, "#api-key")[0]
    box.clear()
    box.send_keys(key)
    css(driver, "#key-form button[type=submit]")[0].click()


def transcript(driver: Any) -> list[dict[str, Any]]:
    """Each transcript row as the page shows it: seq, speaker, text, {task: label}."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#transcript li.turn')].map(li => ({
          seq: Number(li.dataset.seq), speaker: li.dataset.speaker,
          text: li.querySelector('.text').textContent,
          labels: Object.fromEntries([...li.querySelectorAll('.label')].map(
            c => [c.dataset.task, c.dataset.label]))}));""")


def sample_call() -> dict[str, Any]:
    first = (REPO / "samples" / "dialogues.jsonl").read_text().splitlines()[0]
    call = json.loads(first)
    call["turns"].append({"speaker": "customer", "text": HOSTILE})
    return call


def test_a_live_call_shows_up_with_its_transcript_labels_and_alerts(
    live: Callable[..., Any], browser: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    server = live(api_keys=[KEY], rules=rules)
    call = sample_call()
    dialogue_id, turns = call["dialogue_id"], call["turns"]
    answers: dict[int, dict[str, Any]] = {}

    def post(seqs: range) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
            for seq in seqs:
                turn = {"seq": seq, "speaker": turns[seq]["speaker"], "text": turns[seq]["text"]}
                resp = c.post(f"/v1/dialogues/{dialogue_id}/turns", json=turn)
                assert resp.status_code == 200, resp.text
                answers[seq] = resp.json()

    browser.get(f"{server.url}/monitor")
    wait_for(browser, lambda: "401" in css(browser, "#notice")[0].text, "the 401 message before a key is given")
    enter_key(browser, KEY)
    wait_for(browser, lambda: css(browser, "#conn")[0].get_attribute("data-state") == "live", "live events")
    assert not css(browser, "#notice")[0].is_displayed()

    post(range(2))  # the call starts before anyone watches it
    row = f'#calls tr[data-dialogue="{dialogue_id}"]'
    wait_for(browser, lambda: css(browser, row), "the call in the list")
    wait_for(browser, lambda: css(browser, row)[0].click() is None, "a click on the call")  # retried if re-rendered
    wait_for(browser, lambda: len(transcript(browser)) == 2, "the first two turns (the dialogue's window)")

    post(range(2, len(turns)))  # the rest arrives while the page watches
    wait_for(browser, lambda: len(transcript(browser)) == len(turns), "every turn")
    shown = transcript(browser)
    assert [t["seq"] for t in shown] == list(range(len(turns)))
    assert [(t["speaker"], t["text"]) for t in shown] == [(t["speaker"], t["text"]) for t in turns]
    for t in shown[2:]:  # turns that arrived over WS /v1/events carry the labels the service answered
        assert t["labels"] == answers[t["seq"]]["labels"], t["seq"]
    assert shown[1]["labels"] == answers[1]["labels"]  # the window's last turn: labels from last_result

    customer_seqs = sorted(seq for seq, t in enumerate(turns) if t["speaker"] == "customer")
    def alerts() -> list[tuple[int, str]]:  # read in the page in one step: the list re-renders as events arrive
        return [(int(seq), sev) for seq, sev in browser.execute_script("""
            return [...document.querySelectorAll('#alerts li[data-rule="negative_customer"]')].map(
              li => [li.dataset.seq, li.dataset.severity]);""")]

    wait_for(browser, lambda: len(alerts()) == len(customer_seqs), "one alert per customer turn")
    shown_alerts = alerts()
    assert sorted(seq for seq, _ in shown_alerts) == customer_seqs
    assert {sev for _, sev in shown_alerts} == {"warning"}
    badge = f"{row} .badge"
    wait_for(browser, lambda: css(browser, badge)[0].text == str(len(customer_seqs)), "the alert count in the list")
    wait_for(browser, lambda: css(browser, badge)[0].get_attribute("data-severity") == "warning", "a warning badge")
    points = "return document.querySelectorAll('#trend svg circle').length"
    assert browser.execute_script(points) == len(turns)  # one point per scored turn

    # Call text is text: the hostile utterance is shown as typed, and nothing in it ran or rendered.
    assert shown[-1]["text"] == HOSTILE
    assert not css(browser, "#transcript img, #transcript b, #alerts img")
    assert browser.execute_script("return window.__pwned === undefined")

    browser.execute_script("document.activeElement.blur(); document.getAnimations().forEach(a => a.finish())")
    shot = Path(os.environ.get("TURNWISE_MONITOR_SCREENSHOT") or tmp_path / "monitor.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert c.delete(f"/v1/dialogues/{dialogue_id}").status_code == 204
    wait_for(browser, lambda: "ended" in css(browser, row)[0].get_attribute("class").split(), "the call as ended")
    assert "ended" in css(browser, "#detail-meta")[0].text


def test_a_wrong_key_gets_a_clear_401_message(live: Callable[..., Any], browser: Any) -> None:
    server = live(api_keys=[KEY])
    browser.get(f"{server.url}/monitor")
    enter_key(browser, "not-the-key")
    wait_for(browser, lambda: "not accepted" in css(browser, "#notice")[0].text, "the rejected-key message")
    assert "401" in css(browser, "#notice")[0].text
    assert css(browser, "#conn")[0].get_attribute("data-state") == "off"
    assert browser.execute_script("return sessionStorage.getItem('turnwise.monitor.key')") == "not-the-key"
    enter_key(browser, KEY)
    wait_for(browser, lambda: css(browser, "#conn")[0].get_attribute("data-state") == "live", "live events")
    assert not css(browser, "#notice")[0].is_displayed()
