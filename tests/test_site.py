"""Browser checks of the built site, run by `make check-site` after `make book`.

Every HTML page of `_build/html` is opened in Debian's Chromium (driven by Playwright,
never a downloaded browser) from a server on 127.0.0.1. A page passes when it loads, every
math element has been typeset by MathJax with no TeX error and no raw TeX left, every image
has loaded, no request left the machine and the console shows no error. A full-page
screenshot of each page goes to `_build/screenshots/`.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def site_pages() -> list[str]:
    if not (SITE / "index.html").exists():
        return ["<missing>"]  # reported as a failure by the test, not silently skipped
    pages = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html"))
    return [p for p in pages if not p.startswith(("_static/", "_sources/", "_images/"))]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


MATH_STATE = """
() => {
  const math = Array.from(document.querySelectorAll('.math'));
  const untypeset = math.filter(el => !el.querySelector('mjx-container')).length;
  const errors = document.querySelectorAll('mjx-merror').length;
  const text = document.body.innerText;
  const rawTex = /\\\\\\(|\\\\\\[|\\$\\$/.test(text);
  return {count: math.length, untypeset, errors, rawTex};
}
"""

IMAGE_STATE = """
() => Array.from(document.images)
  .filter(img => !img.complete || img.naturalWidth === 0)
  .map(img => img.getAttribute('src'))
"""


@pytest.mark.parametrize("page_path", site_pages())
def test_page_renders_offline_without_errors(page_path, server, browser):
    assert page_path != "<missing>", f"no built site at {SITE}: run `make book` first"
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    console_errors, page_errors, outside, failed = [], [], [], []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("requestfailed", lambda request: failed.append(request.url) if request.url.startswith(server) else None)

    def guard(route):
        if route.request.url.startswith(server) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    response = page.goto(server + page_path, wait_until="load")
    assert response is not None and response.ok, f"{page_path} answered {response and response.status}"
    page.wait_for_load_state("networkidle")
    has_mathjax = page.evaluate("() => Boolean(window.MathJax && window.MathJax.startup)")
    if has_mathjax:
        page.evaluate("() => window.MathJax.startup.promise")
    math = page.evaluate(MATH_STATE)
    if math["count"]:
        assert has_mathjax, f"{page_path} has {math['count']} math elements but no MathJax"
    assert math["untypeset"] == 0, f"{page_path}: {math['untypeset']} of {math['count']} math elements not typeset"
    assert math["errors"] == 0, f"{page_path}: {math['errors']} MathJax errors"
    assert not math["rawTex"], f"{page_path}: raw TeX delimiters left in the text"
    broken = page.evaluate(IMAGE_STATE)
    assert not broken, f"{page_path}: images not loaded: {broken}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")), full_page=True)
    assert not outside, f"{page_path} requested outside the machine: {outside}"
    assert not failed, f"{page_path}: requests failed: {failed}"
    assert not page_errors, f"{page_path}: script errors: {page_errors}"
    assert not console_errors, f"{page_path}: console errors: {console_errors}"
    context.close()


def chapter_pages() -> list[str]:
    """The built pages of the chapters, which link their notebooks (see book/_ext/teaching_kit.py)."""
    import sys

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import teaching_kit

    return [f"{name}.html" for name in teaching_kit.chapter_documents(ROOT)]


@pytest.mark.parametrize("page_path", chapter_pages())
def test_chapter_page_links_its_notebooks_offline(page_path, server, browser):
    import nbformat

    assert (SITE / page_path).exists(), f"{page_path} is not built: run `make book` first"
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    outside = []

    def guard(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(server + page_path, wait_until="load")
    links = page.locator(".teaching-kit-notebooks a")
    assert links.count() == 2, f"{page_path}: expected links to 2 notebooks, found {links.count()}"
    stem = Path(page_path).stem
    for index, kind in enumerate(("student", "instructor")):
        link = links.nth(index)
        assert link.get_attribute("href").endswith(f"notebooks/{kind}/{stem}.ipynb")
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        assert download.failure() is None, f"{page_path}: the {kind} notebook failed to download"
        notebook = nbformat.read(download.path(), as_version=4)
        nbformat.validate(notebook)
        text = "\n".join(cell.source for cell in notebook.cells)
        assert ("{solution" in text) == (kind == "instructor"), f"{page_path}: {kind} notebook has the wrong solutions"
    assert not outside, f"{page_path} requested outside the machine: {outside}"
    context.close()
