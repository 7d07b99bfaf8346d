"""Regenerate the README's playground screenshots from a real `bentoml serve` and headless Chromium.

    .venv/bin/python tools/screenshots.py --exports exports

Starts ``bentoml serve`` on a free loopback port with ``ATELIER_EXPORTS`` at ``--exports`` (the
``bench.pipeline.Server``: ready when ``/readyz`` says so, stopped with SIGTERM to its process group),
opens the playground in headless Chromium (``tests.browser.open_browser``: Debian's ``chromium`` and
``chromium-driver``) in a 1200 px wide window, and writes, the window's height fitted to the page:

- ``docs/playground-style.jpg`` (JPEG, quality 85): the style transfer tab with a photo chosen,
  one preset selected in the gallery (``--preset``, default ``wheat_field``, else the first
  preset ``/styles`` lists), stylised, the before/after result shown;
- ``docs/playground-gan.png``: the GAN samples tab at ``?tab=gan&seed=5&n=8``, the tiles drawn.

The photo is one of scikit-image's bundled pictures (``--photo``, default ``coffee``), written to a
temporary file: not one of the style evaluation set's (``training/style/pictures/eval``), which
stays evaluation-only. Needs the dev requirements (selenium, scikit-image) and the system browser.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pipeline import Server  # noqa: E402
from tests.browser import open_browser, wait  # noqa: E402

WIDTH = 1200
GAN_QUERY = "?tab=gan&seed=5&n=8"
RESULT_SHOWN = (
    "const ims = [document.getElementById('result-image'), document.getElementById('before-image')];"
    "return !document.getElementById('style-result').hidden"
    " && ims.every(im => im.complete && im.naturalWidth > 0) || null"
)


def load(driver, url: str) -> None:
    """The playground at ``url``, once its start-up calls (styles, info, a GAN query's samples) are done."""
    driver.get(url)
    wait(driver, "return document.body.dataset.ready === 'true' || null")


def fit_height(driver) -> None:
    """Resize the window so that the viewport holds the whole page (1200 px wide)."""
    driver.set_window_size(WIDTH, 300)  # shrink first: scrollHeight never reads less than the viewport
    chrome = driver.get_window_size()["height"] - driver.execute_script("return window.innerHeight")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, height + chrome)
    driver.execute_script("window.scrollTo(0, 0); window.dispatchEvent(new Event('resize'))")
    driver.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def screenshot(driver, out: Path, **save) -> None:
    from PIL import Image

    fit_height(driver)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, **save)
    print(f"{out}: {image.width}x{image.height}")


def choose_preset(driver, wanted: str) -> str:
    """Press ``wanted``'s gallery button (or the first preset's if it is missing) and no other."""
    names = driver.execute_script("return [...document.querySelectorAll('#presets button')].map(b => b.dataset.name)")
    if not names:
        raise SystemExit("the service lists no style presets")
    chosen = wanted if wanted in names else names[0]
    for button in driver.find_elements("css selector", "#presets button"):
        if (button.get_attribute("aria-pressed") == "true") != (button.get_attribute("data-name") == chosen):
            button.click()
    pressed = driver.execute_script(
        "return [...document.querySelectorAll('#presets button[aria-pressed=true]')].map(b => b.dataset.name)"
    )
    assert pressed == [chosen], pressed
    return chosen


def style_shot(driver, url: str, photo: Path, preset: str, out: Path) -> None:
    load(driver, url)
    driver.find_element("id", "content").send_keys(str(photo))
    chosen = choose_preset(driver, preset)
    driver.find_element("id", "stylize").click()
    wait(driver, RESULT_SHOWN, timeout=120)
    caption = driver.find_element("id", "result-caption").text
    print(f"stylised with preset {chosen}: {caption}")
    screenshot(driver, out, quality=85, optimize=True)


def gan_shot(driver, url: str, out: Path) -> None:
    load(driver, url + GAN_QUERY)
    n = int(GAN_QUERY.rsplit("n=", 1)[1])
    wait(
        driver,
        "const ims = [...document.querySelectorAll('#samples img')];"
        f"return ims.length === {n} && ims.every(im => im.complete && im.naturalWidth > 0) || null",
    )
    print(f"GAN: {driver.find_element('id', 'gan-caption').text}")
    screenshot(driver, out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=Path, default=REPO / "exports", help="the export to serve")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the two screenshots go")
    parser.add_argument("--preset", default="wheat_field", help="the style preset to select")
    parser.add_argument("--photo", default="coffee", help="a scikit-image picture name (skimage.data.NAME)")
    args = parser.parse_args(argv)
    exports = args.exports.resolve()
    if not (exports / "manifest.json").is_file():
        parser.error(f"{exports} holds no export (manifest.json)")

    import skimage.data
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="atelier-screenshots-") as tmp:
        photo = Path(tmp) / f"{args.photo}.jpg"
        Image.fromarray(getattr(skimage.data, args.photo)()).convert("RGB").save(photo, quality=92)
        with Server(exports, Path(tmp) / "serve.log") as server:
            driver = open_browser(WIDTH, 1000)
            try:
                url = f"{server.url}/playground/"
                style_shot(driver, url, photo, args.preset, args.out / "playground-style.jpg")
                gan_shot(driver, url, args.out / "playground-gan.png")
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
