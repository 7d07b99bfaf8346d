"""The playground page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a real `bentoml serve`."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from PIL import Image

from bench import hostile_images as hi
from tests.browser import open_browser, wait


@pytest.fixture(scope="module")
def browser():
    driver = open_browser()
    yield driver
    driver.quit()


def load(driver, server, query: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{server.url}/playground{query}")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (Chrome's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.mark.parametrize("page", ["/", "/playground/"])
def test_the_pages_the_service_serves_ask_no_other_site_for_anything(browser, server, page):
    """No third-party requests: BentoML's own API page loads Google Tag Manager and badges from three
    other sites; the service's page serves the same Swagger UI from its own files."""
    requested_urls(browser)  # drop what earlier tests logged
    browser.get(f"{server.url}{page}")
    wait(browser, "return document.readyState === 'complete'")
    if page == "/":
        wait(browser, "return document.querySelectorAll('.opblock').length >= 6")  # the API's routes, drawn
    urls = requested_urls(browser)
    assert urls and all(u.startswith((server.url, "data:", "blob:")) for u in urls), urls
    assert not severe_console_messages(browser)


def severe_console_messages(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_loads_with_presets_labels_and_models_and_no_console_errors(browser, server):
    load(browser, server, "/")  # /playground redirects to /playground/
    styles = requests.post(f"{server.url}/styles", json={}, timeout=30).json()["styles"]
    shown = browser.execute_script("return [...document.querySelectorAll('#presets button')].map(b => b.dataset.name)")
    assert shown == [s["name"] for s in styles]
    titles = browser.execute_script("return [...document.querySelectorAll('#presets button')].map(b => b.title)")
    credits = {s["name"]: s.get("credit") for s in styles}
    assert credits["wheat_field"] in titles[shown.index("wheat_field")]  # where a preset comes from, on hover
    labels = browser.execute_script("return [...document.querySelectorAll('#label option')].map(o => o.value)")
    assert labels == ["", "0", "1", "2", "3"]
    info = requests.post(f"{server.url}/info", json={}, timeout=30).json()
    shown = browser.find_element("id", "info").get_attribute("textContent")
    assert info["device"] in shown and info["models"]["stylizer"]["provider"] in shown
    assert severe_console_messages(browser) == []


def test_the_style_flow_paints_the_photo_at_its_size(browser, server, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(hi.gradient(96, 64)).save(photo)
    load(browser, server)
    browser.find_element("id", "content").send_keys(str(photo))
    browser.find_element("id", "stylize").click()
    size = wait(
        browser,
        "const im = document.getElementById('result-image');"
        "return !document.getElementById('style-result').hidden && im.complete && im.naturalWidth"
        " ? [im.naturalWidth, im.naturalHeight] : null",
    )
    assert size == [96, 64]
    caption = browser.find_element("id", "result-caption").text
    assert caption.startswith("96x64 px, preset:")
    assert browser.find_element("id", "download").get_attribute("href").startswith("blob:")
    browser.save_screenshot(str(tmp_path / "style.png"))
    assert severe_console_messages(browser) == []


def test_a_broken_upload_shows_the_apis_message_next_to_the_field(browser, server, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(hi.truncated_png())
    load(browser, server)
    browser.find_element("id", "content").send_keys(str(broken))
    browser.find_element("id", "stylize").click()
    message = wait(browser, "return document.querySelector('.error[data-field=content]').textContent")
    api = requests.post(
        f"{server.url}/stylize", files={"content": hi.truncated_png()}, data={"style_name": "wheat_field"}, timeout=30
    ).json()["detail"][0]["msg"]
    assert message == api
    assert browser.find_element("id", "stylize").is_enabled()  # usable again


def test_the_gan_flow_shows_the_seeds_digits_and_the_url_reproduces_them(browser, server):
    load(browser, server, "?tab=gan&seed=5&n=3&label=2")
    shown = wait(
        browser,
        "const ims = [...document.querySelectorAll('#samples img')];"
        "return ims.length === 3 ? ims.map(im => im.src) : null",
    )
    api = requests.post(f"{server.url}/sample", json={"n": 3, "seed": 5, "label": 2}, timeout=30).json()
    assert [src.split(",", 1)[1] for src in shown] == api["images"]  # the same PNGs, byte for byte
    assert base64.b64decode(api["images"][0])[:4] == b"\x89PNG"
    assert "seed 5" in browser.find_element("id", "gan-caption").text
    assert "seed=5" in browser.current_url and "label=2" in browser.current_url

    browser.find_element("id", "seed_b").clear()
    browser.find_element("id", "seed_b").send_keys("9")
    browser.find_element("id", "interpolate").click()
    steps = wait(browser, "return document.querySelectorAll('#walk-strip img').length || null")
    assert steps == 12 and "seed_b=9" in browser.current_url
    assert browser.find_element("id", "walk-animation").get_attribute("src").startswith("data:image/png")


def painted_samples_shown(browser, described: str) -> list[str]:
    """The sample tiles' base64 PNGs, once the caption says they were painted in ``described``."""
    sources = wait(
        browser,
        f"return document.getElementById('gan-caption').textContent.includes('painted in {described}')"
        " ? [...document.querySelectorAll('#samples img')].map(im => im.src) : null",
    )
    return [src.split(",", 1)[1] for src in sources]


def test_samples_painted_in_a_preset_are_the_apis(browser, server):
    from selenium.webdriver.support.ui import Select

    load(browser, server, "?tab=gan&seed=8&n=2")
    wait(browser, "return document.querySelectorAll('#samples img').length === 2 || null")
    Select(browser.find_element("id", "sample-style")).select_by_value("wheat_field")
    browser.find_element("id", "sample").click()
    shown = painted_samples_shown(browser, "preset:wheat_field")
    api = requests.post(
        f"{server.url}/sample", json={"n": 2, "seed": 8, "style_name": "wheat_field"}, timeout=60
    ).json()
    assert shown == api["images"]


def test_samples_painted_in_an_uploaded_style_are_the_apis(browser, server, tmp_path):
    style = tmp_path / "mine.png"
    Image.fromarray(hi.gradient(80, 60)).save(style)
    load(browser, server, "?tab=gan&seed=6&n=2")
    wait(browser, "return document.querySelectorAll('#samples img').length === 2 || null")
    browser.find_element("id", "sample-style-image").send_keys(str(style))
    browser.find_element("id", "sample").click()
    shown = painted_samples_shown(browser, "upload")
    api = requests.post(
        f"{server.url}/sample",
        files=[("style", ("mine.png", style.read_bytes(), "image/png"))],
        data={"n": "2", "seed": "6", "truncation": "1"},  # the page starts at the export's default strength
        timeout=60,
    ).json()
    assert shown == api["images"]


def test_an_animated_upload_comes_back_animated(browser, server, tmp_path):
    clip = tmp_path / "clip.gif"
    clip.write_bytes(hi.panning_gif(48, 32, [100] * 3))
    load(browser, server)
    browser.find_element("id", "content").send_keys(str(clip))
    browser.find_element("id", "stylize").click()
    caption = wait(
        browser,
        "return !document.getElementById('style-result').hidden"
        " && document.getElementById('result-caption').textContent",
    )
    assert caption.startswith("48x32 px, 3 frames")
    assert browser.find_element("id", "download").get_attribute("download") == "atelier.gif"


def test_the_page_fits_a_phone_and_works_by_keyboard(server):
    from selenium.webdriver.common.keys import Keys

    phone = open_browser(390, 844)
    try:
        load(phone, server)
        assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        phone.find_element("id", "tab-style").send_keys(Keys.ARROW_RIGHT)  # arrow keys move between tabs
        assert phone.find_element("id", "panel-gan").is_displayed()
        assert phone.switch_to.active_element.get_attribute("id") == "tab-gan"
        assert severe_console_messages(phone) == []
    finally:
        phone.quit()
