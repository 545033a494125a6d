"""The demo page in headless Chromium (Debian's), against the live app on the tiny random model."""

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
XSS = "<img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (.ci/install-browser.sh)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    """A fresh page that records dialogs, script errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs, page.problems = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.goto(base_url)
    yield page
    context.close()


def submit(page, text):
    page.fill("#text", text)
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden])")
    page.wait_for_function("document.querySelector('#submit').textContent === 'Analyze'")


def test_sentence_renders_every_panel(page):
    text = "Apple shares rose in New York after Tim Cook met European Union officials in Brussels."
    assert page.is_visible("#untrained-banner")
    submit(page, text)
    topic = page.text_content("#topic-label")
    assert topic in ("World", "Sports", "Business", "Sci/Tech")
    assert page.locator("#probabilities .bar-row").count() == 4
    # random heads: entities are random, but the highlighted text must read back as the input
    assert page.is_visible("#highlight")
    assert page.text_content("#highlight") == text
    for mark in page.locator("#highlight mark").all():
        assert mark.get_attribute("data-type") in ("PER", "ORG", "LOC", "MISC")
        assert "score" in mark.get_attribute("title")
    chips = page.locator("#tokens .chip")
    assert chips.count() > 10
    assert page.locator("#tokens .chip.special").count() == 2
    assert page.text_content("#mask") == "[" + ", ".join(["1"] * chips.count()) + "]"
    assert page.locator("#batch .cell.pad").count() > 0  # the shorter sentence of the batch is padded
    canvas = page.locator("#embedding-canvas")
    assert canvas.is_visible() and canvas.bounding_box()["height"] > 0
    assert "32 values" in page.text_content("#embedding-meta")  # the tiny model's hidden size
    assert page.is_hidden("#error")
    assert not page.problems


def test_emoji_offsets_line_up(page):
    text = "Zoë 🤖 met Müller in Zürich 🚀 on Monday."
    submit(page, text)
    assert page.text_content("#highlight") == text
    assert not page.problems


def test_markup_is_shown_as_text(page):
    submit(page, XSS)
    page.wait_for_timeout(300)  # give a would-be onerror handler time to fire
    assert page.dialogs == []
    assert page.locator("img").count() == 0
    assert page.text_content("#highlight") == XSS
    assert not page.problems


def test_server_errors_are_shown(page):
    page.fill("#text", "x" * 50_001)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "50000" in page.text_content("#error")


def test_an_error_clears_the_previous_results(page):
    submit(page, "Apple shares rose in New York, " + "and rose " * 300)  # past max_seq_length
    assert page.is_visible("#results") and page.is_visible("#truncated")
    page.fill("#text", "x" * 50_001)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.is_hidden("#results") and page.is_hidden("#truncated")
    assert page.text_content("#highlight") == "" and page.locator("#tokens .chip").count() == 0
    assert not [p for p in page.problems if "status of 413" not in p]  # the browser logs the 413 itself
