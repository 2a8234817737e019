"""A screenshot of the live monitor page with a trained model: ``benchmarks/results/monitor.png``.

    make demo   # trains and exports runs/demo/bundle
    .venv/bin/python -m benchmarks.monitor_screenshot [--bundle runs/demo/bundle] [--out PATH]

Serves the bundle with the sample alert rules (embedded store), streams four held-out sample calls
into it over REST, opens ``/monitor`` in headless Chromium (Debian's chromium + chromium-driver),
selects the first call and saves the page once its transcript, labels and alerts are shown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import httpx

from harness.live import LiveServer
from service.config import Settings

REPO = Path(__file__).resolve().parents[1]
CALLS = (41, 1, 5, 85)  # sample calls (1-based lines of samples/dialogues.jsonl); 41 and 85 are held out by make demo


def stream_calls(url: str, calls: list[dict]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        longest = max(len(d["turns"]) for d in calls)
        for seq in range(longest):  # interleaved, as live calls are
            for d in calls:
                if seq < len(d["turns"]):
                    t = d["turns"][seq]
                    c.post(f"/v1/dialogues/{d['dialogue_id']}/turns",
                           json={"seq": seq, "speaker": t["speaker"], "text": t["text"]}).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO / "runs" / "demo" / "bundle")
    ap.add_argument("--rules", type=Path, default=REPO / "samples" / "rules.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "monitor.png")
    args = ap.parse_args(argv)
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        sys.exit("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    if not (args.bundle / "bundle.json").is_file():
        sys.exit(f"no bundle at {args.bundle}: run `make demo` first, or pass --bundle")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    lines = (REPO / "samples" / "dialogues.jsonl").read_text().splitlines()
    calls = [json.loads(lines[n - 1]) for n in CALLS]
    server = LiveServer(Settings(bundle=args.bundle, rules=args.rules, reload_poll_s=0, log_level="warning")).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,860", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    try:
        driver.get(f"{server.url}/monitor")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        stream_calls(server.url, calls)
        first = calls[0]["dialogue_id"]
        row = f'#calls tr[data-dialogue="{first}"]'
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        driver.find_element(By.CSS_SELECTOR, row).click()
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript li.turn")) == len(calls[0]["turns"]))
        time.sleep(1.0)  # the list's next refresh and the trend chart
        driver.execute_script("document.activeElement.blur(); document.getAnimations().forEach(a => a.finish())")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        alerts = len(driver.find_elements(By.CSS_SELECTOR, "#alerts li"))
        print(f"wrote {args.out} ({first}: {len(calls[0]['turns'])} turns, {alerts} alert(s) shown)")
    finally:
        driver.quit()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
