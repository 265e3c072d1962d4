"""A screenshot of the demo page in headless Chromium (docs/web-*.png, browser tests).

    python -m movierec.apps.web.screenshot http://127.0.0.1:8080 docs/web-demo.png \
        --like "toy story" --like "star wars" --like fargo --rate 5
    python -m movierec.apps.web.screenshot http://127.0.0.1:8080 docs/web-onboarding.png \
        --profile 31,M,12 --like "toy story" --like "star wars" --like fargo

Searches each ``--like`` title and likes the first hit (no ``--like``: the first three
popular movies). Without ``--profile`` it then asks for recommendations from the likes;
with ``--profile AGE,GENDER,OCCUPATION`` it first saves that profile (step 1 of the
onboarding flow) and waits, after each like, for the list to be fetched again for the
profile and that many likes. It optionally rates the first recommendation and saves the
whole page. The page needs a running stack behind the facade at ``url`` (``make run``,
or ``movierec up``). Uses Debian's ``chromium`` and ``chromedriver`` through Selenium (the
``web`` extra's test dependency); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


def chromium_driver(user_data_dir: Path, width: int = 1280, height: int = 1800):
    """A Selenium driver for headless Debian Chromium with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or CHROMEDRIVER is None:
        raise RuntimeError("needs chromium and chromedriver (apt-get install chromium "
                           "chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def wait_for(driver, condition, timeout: float = 20.0):
    """Poll ``condition(driver)`` until it is truthy; return its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def movie_ids(driver, selector: str) -> list[int]:
    """The ``data-movie-id`` of every element matching ``selector``, in page order."""
    from selenium.webdriver.common.by import By

    return [int(e.get_attribute("data-movie-id"))
            for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def full_page(driver, path: Path) -> Path:
    """Resize the window to the page's height, then save a PNG."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 140, 8000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def shows_likes(driver, count: int) -> bool:
    """Whether the list on show was fetched for the profile and ``count`` likes."""
    text = status(driver)
    if count == 0:
        return "for your profile (no likes yet)" in text
    return re.search(rf"for your profile \+ {count} likes? from ", text) is not None


def set_profile(driver, age: int, gender: str, occupation: int) -> None:
    """Step 1: fill the profile form and submit it; wait for its recommendations."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    box = driver.find_element(By.ID, "age")
    box.clear()
    box.send_keys(str(age))
    Select(driver.find_element(By.ID, "gender")).select_by_value(gender)
    Select(driver.find_element(By.ID, "occupation")).select_by_value(str(occupation))
    driver.find_element(By.CSS_SELECTOR, "#profile-form button[type=submit]").click()
    wait_for(driver, lambda d: "for your profile" in status(d) and movie_ids(d, "#recs li"))


def _like(driver, titles: Sequence[str], onboarding: bool) -> None:
    """Like each title's first search hit (or the first three popular movies); with a
    profile saved, wait after each click for the list fetched with that many likes."""
    from selenium.webdriver.common.by import By

    def click(button, count: int) -> None:
        button.click()
        if onboarding:
            wait_for(driver, lambda d: shows_likes(d, count))

    wait_for(driver, lambda d: len(movie_ids(d, "#grid .movie")) >= 3)
    if not titles:
        for count, button in enumerate(
                driver.find_elements(By.CSS_SELECTOR, "#grid .movie")[:3], 1):
            click(button, count)
        return
    for count, title in enumerate(titles, 1):
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(title)
        driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
        wait_for(driver, lambda d, t=title: t.lower() in d.find_element(
            By.ID, "grid-caption").text.lower() and movie_ids(d, "#grid .movie"))
        click(driver.find_element(By.CSS_SELECTOR, "#grid .movie"), count)


def demo(url: str, out: Path, likes: Sequence[str], rate: int, width: int,
         profile: tuple[int, str, int] | None = None) -> Path:
    """Drive the page like a visitor and save the screenshot to ``out``: with a
    ``profile`` (age, gender, occupation), the onboarding flow; else likes only."""
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as user_data:
        driver = chromium_driver(Path(user_data), width)
        try:
            driver.get(url)
            if profile is not None:
                set_profile(driver, *profile)
            _like(driver, likes, onboarding=profile is not None)
            if profile is None:
                driver.find_element(By.ID, "recommend-liked").click()
            wait_for(driver, lambda d: movie_ids(d, "#recs li"))
            if rate:
                driver.find_element(By.CSS_SELECTOR, f"#recs li button[data-stars='{rate}']"
                                    ).click()
                wait_for(driver, lambda d: status(d).startswith("Rated"))
            return full_page(driver, out)
        finally:
            driver.quit()


def _profile(text: str) -> tuple[int, str, int]:
    try:
        age, gender, occupation = text.split(",")
        return int(age), gender.strip().upper(), int(occupation)
    except ValueError:
        raise argparse.ArgumentTypeError("give AGE,GENDER,OCCUPATION, e.g. 31,M,12") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m movierec.apps.web.screenshot",
                                description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("out", type=Path)
    p.add_argument("--like", action="append", default=[], help="a title to search and like")
    p.add_argument("--rate", type=int, default=0, choices=range(0, 6),
                   help="rate the first recommendation (0: no)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--profile", type=_profile, metavar="AGE,GENDER,OCCUPATION",
                   help="save this profile first, then like (the onboarding flow), "
                        "e.g. 31,M,12")
    args = p.parse_args(argv)
    print(demo(args.url, args.out, args.like, args.rate, args.width, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
