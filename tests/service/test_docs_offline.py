"""/docs (Swagger UI) and /redoc load from the service alone: no CDN, no outside host.

The pages' scripts, styles and favicon are served from an installed package under /docs/assets/; the
browser test opens /docs in headless Chromium and checks that the API rendered and that every resource
the page loaded came from the service (it skips where Chromium or chromedriver is missing).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

EXTERNAL = re.compile(r"(?:https?:)?//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
KINDS = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def check_page(c: httpx.Client, path: str, expect: set[str]) -> None:
    page = c.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
    assert not EXTERNAL.findall(page.text), f"{path} refers to {EXTERNAL.findall(page.text)}"
    refs = set(REF.findall(page.text))
    assert {ref.rsplit("/", 1)[-1] for ref in refs} == expect, refs
    for ref in refs:
        assert ref.startswith("/docs/assets/"), ref
        asset = c.get(ref)
        kind = KINDS[ref[ref.rindex("."):]]
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), ref
        assert len(asset.content) > 1000, ref


def test_docs_and_redoc_reference_only_the_service(live: Callable[..., Any]) -> None:
    server = live(api_keys=["docs-key"])  # the pages and their assets need no key
    with httpx.Client(base_url=server.url) as c:
        check_page(c, "/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})
        check_page(c, "/redoc", {"redoc.standalone.js", "favicon.png"})
        docs = c.get("/docs").text
        assert "url: '/openapi.json'" in docs
        assert '"validatorUrl": null' in docs  # no badge fetched from validator.swagger.io
        assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/docs/oauth2-redirect").status_code == 200
        for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-ui.js"):
            assert c.get(f"/docs/assets/{name}").status_code == 404, name


def test_swagger_ui_renders_from_the_service_alone(live: Callable[..., Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = live()
    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    assert "turnwise" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/dialogues/{dialogue_id}/turns" in paths
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(server.url + "/") for url in loaded), loaded
