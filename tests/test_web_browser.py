"""The web demo in a real headless Chromium over the real stack (synthetic models).

Starts the four services like tests/test_e2e.py, the facade as ``python -m movierec.apps.web``, and
drives Debian's Chromium through chromedriver with Selenium: like three movies (one
by keyboard), get recommendations that exclude them, page with "More", rate one and
see it disappear; then the same through the profile form, where the gateway hides the
rated movie (the visitor id's rated movies are hidden by default); then the onboarding
flow: save a profile, click movies one after another and see the list fetched again
for the profile and that many likes after each click, without the liked movies.
Screenshots are saved under ``build/web-e2e/``. Skips only when chromium or
chromedriver is not installed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from stack_fixture import Stack

from movierec.apps.web.screenshot import (
    CHROMEDRIVER,
    CHROMIUM,
    chromium_driver,
    full_page,
    set_profile,
    shows_likes,
    status,
    wait_for,
)
from movierec.apps.web.screenshot import movie_ids as ids
from movierec.stack.process import stop_process
from movierec.stack.web import start_web

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "web-e2e"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def site(stack: Stack):
    proc, url = start_web({**stack.env, "WEB_CALL_TIMEOUT": "5"}, stack.logs)
    try:
        yield stack, url
    finally:
        stop_process(proc)


@pytest.fixture
def browser(tmp_path: Path):
    driver = chromium_driver(tmp_path / "profile")
    yield driver
    driver.quit()


def rate_first(driver, stars: int) -> int:
    """Rate the first recommendation; return its id once it has left the list."""
    from selenium.webdriver.common.by import By

    target = ids(driver, "#recs li")[0]
    driver.find_element(By.CSS_SELECTOR, f"#recs li[data-movie-id='{target}'] "
                                         f"button[data-stars='{stars}']").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "status").text.startswith("Rated"))
    assert target not in ids(driver, "#recs li")
    assert len(ids(driver, "#recs li")) >= 12
    return target


def test_like_recommend_page_and_rate(site: tuple[Stack, str], browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _stack, url = site
    browser.get(url)
    wait_for(browser, lambda d: len(ids(d, "#grid .movie")) >= 6)
    assert browser.find_element(By.ID, "visitor-id").text.isdigit()
    grid = browser.find_elements(By.CSS_SELECTOR, "#grid .movie")
    grid[0].click()
    grid[1].click()
    grid[2].send_keys(Keys.SPACE)  # keyboard works like a click
    liked = ids(browser, "#grid .movie[aria-pressed='true']")
    assert len(liked) == 3
    browser.find_element(By.ID, "recommend-liked").click()
    wait_for(browser, lambda d: len(ids(d, "#recs li")) == 12)
    first_page = ids(browser, "#recs li")
    assert not set(first_page) & set(liked)
    reasons = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#recs .reason")]
    # a liked movie when co-rating ties it to the item, else a genre or taste reason
    assert all(r.startswith(("because you liked", "because you like ", "close to your taste"))
               for r in reasons), reasons
    assert any(r.startswith("because you liked") for r in reasons), reasons
    browser.find_element(By.ID, "more").click()
    wait_for(browser, lambda d: len(ids(d, "#recs li")) == 24)
    assert len(set(ids(browser, "#recs li"))) == 24
    rated = rate_first(browser, 5)
    assert not set(ids(browser, "#recs li")) & (set(liked) | {rated})
    full_page(browser, ARTIFACTS / "liked.png")


def test_profile_hides_rated_movies(site: tuple[Stack, str], browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _stack, url = site
    browser.set_window_size(400, 900)  # phone width
    browser.get(url)
    age = browser.find_element(By.ID, "age")
    age.clear()
    age.send_keys("31")
    Select(browser.find_element(By.ID, "gender")).select_by_value("M")
    Select(browser.find_element(By.ID, "occupation")).select_by_value("12")
    browser.find_element(By.CSS_SELECTOR, "#profile-form button[type=submit]").click()
    wait_for(browser, lambda d: len(ids(d, "#recs li")) == 12)
    reasons = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#recs .reason")]
    assert all("predicted" in r for r in reasons), reasons
    rated = rate_first(browser, 2)
    browser.refresh()  # the visitor's id and ratings survive a reload
    browser.find_element(By.CSS_SELECTOR, "#profile-form button[type=submit]").click()
    wait_for(browser, lambda d: len(ids(d, "#recs li")) == 12)
    assert rated not in ids(browser, "#recs li")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, "the page must not scroll sideways on a phone"
    full_page(browser, ARTIFACTS / "profile-phone.png")


def settled(driver) -> bool:
    """No recommendation request is in flight (the list is not marked busy)."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "recs").get_attribute("aria-busy") == "false"


def test_onboarding_updates_after_each_like(site: tuple[Stack, str], browser) -> None:
    from selenium.webdriver.common.by import By

    _stack, url = site
    browser.get(url)
    wait_for(browser, lambda d: len(ids(d, "#grid .movie")) >= 6)
    assert not ids(browser, "#recs li")          # nothing before a profile or a request
    set_profile(browser, 31, "M", 12)
    wait_for(browser, lambda d: shows_likes(d, 0) and len(ids(d, "#recs li")) == 12)
    assert status(browser).split(" from ")[1].startswith("fusion@")
    assert "+pinsage@" not in status(browser)
    assert "Profile saved" in browser.find_element(By.ID, "profile-note").text
    lists = [ids(browser, "#recs li")]
    liked: list[int] = []
    for count in (1, 2, 3):
        # prefer a movie the list shows now: liking it must take it out of the list
        grid = [i for i in ids(browser, "#grid .movie") if i not in liked]
        pick = next((i for i in grid if i in lists[-1]), grid[0])
        browser.find_element(By.CSS_SELECTOR, f"#grid .movie[data-movie-id='{pick}']").click()
        liked.append(pick)
        wait_for(browser, lambda d, n=count: shows_likes(d, n) and settled(d))
        assert "+pinsage@" in status(browser) and status(browser).startswith("12 ")
        shown = ids(browser, "#recs li")
        assert len(shown) == 12 and not set(shown) & set(liked), (shown, liked)
        assert sorted(ids(browser, "#grid .movie[aria-pressed='true']")) == sorted(liked)
        lists.append(shown)
    assert lists[-1] != lists[0]                 # the likes changed the recommendations
    full_page(browser, ARTIFACTS / "onboarding.png")

    # an unlike is a click too; "More" pages the same profile_and_liked request
    browser.find_element(By.CSS_SELECTOR,
                         f"#grid .movie[data-movie-id='{liked.pop()}']").click()
    wait_for(browser, lambda d: shows_likes(d, 2) and settled(d))
    browser.find_element(By.ID, "more").click()
    wait_for(browser, lambda d: len(ids(d, "#recs li")) == 24)
    assert len(set(ids(browser, "#recs li"))) == 24 and shows_likes(browser, 2)
    assert not set(ids(browser, "#recs li")) & set(liked)

    # rating 5 in this mode: the movie leaves the list and counts as a like
    rated = rate_first(browser, 5)
    assert shows_likes(browser, 3) and rated not in ids(browser, "#recs li")


def test_onboarding_shows_only_the_latest_clicks_answer(site: tuple[Stack, str],
                                                        browser) -> None:
    from selenium.webdriver.common.by import By

    _stack, url = site
    browser.get(url)
    wait_for(browser, lambda d: len(ids(d, "#grid .movie")) >= 6)
    set_profile(browser, 45, "F", 1)
    grid = browser.find_elements(By.CSS_SELECTOR, "#grid .movie")
    for button in grid[:4]:          # four clicks without waiting for any answer
        button.click()
    liked = ids(browser, "#grid .movie[aria-pressed='true']")
    assert len(liked) == 4
    wait_for(browser, lambda d: shows_likes(d, 4) and settled(d))
    assert not set(ids(browser, "#recs li")) & set(liked)
    browser.refresh()                # the profile and likes survive a reload
    wait_for(browser, lambda d: len(ids(d, "#grid .movie")) >= 6)
    assert "Profile saved" in browser.find_element(By.ID, "profile-note").text
    browser.find_element(By.CSS_SELECTOR,
                         f"#grid .movie[data-movie-id='{liked[0]}']").click()  # unlike
    wait_for(browser, lambda d: shows_likes(d, 3) and settled(d))
    assert liked[0] not in ids(browser, "#grid .movie[aria-pressed='true']")


def test_api_over_the_real_stack(site: tuple[Stack, str]) -> None:
    _stack, url = site
    liked = [m["movie_id"] for m in httpx.get(f"{url}/api/movies/popular?limit=3").json()[
        "movies"]]
    reply = httpx.post(f"{url}/api/recommend", json={"liked": {"movie_ids": liked},
                                                     "top_k": 5}).json()
    assert len(reply["items"]) == 5 and not {i["movie_id"] for i in reply["items"]} & set(liked)
    missing = httpx.get(f"{url}/api/movies/987654/similar")
    assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
    bad = httpx.post(f"{url}/api/recommend", json={"liked": {"movie_ids": [999_999]}})
    assert bad.status_code == 400 and bad.json()["message"].startswith("liked.movie_ids")


def test_profile_and_liked_api_over_the_real_stack(site: tuple[Stack, str]) -> None:
    _stack, url = site
    profile = {"age": 31, "gender": "M", "occupation": 12}
    liked = [m["movie_id"] for m in httpx.get(f"{url}/api/movies/popular?limit=3").json()[
        "movies"]]
    both = httpx.post(f"{url}/api/recommend", json={"profile_and_liked": {
        "profile": profile, "liked": {"movie_ids": liked}}, "top_k": 8})
    assert both.status_code == 200, both.text
    reply = both.json()
    assert reply["model_version"].startswith("fusion@") and "+pinsage@" in reply[
        "model_version"]
    assert len(reply["items"]) == 8 and not {i["movie_id"] for i in reply["items"]} & set(liked)
    alone = httpx.post(f"{url}/api/recommend", json={"profile_and_liked": {
        "profile": profile, "liked": {"movie_ids": []}}, "top_k": 8}).json()
    assert alone["model_version"].startswith("fusion@") and "+" not in alone["model_version"]
    assert len(alone["items"]) == 8
    unknown = httpx.post(f"{url}/api/recommend", json={"profile_and_liked": {
        "profile": profile, "liked": {"movie_ids": [999_999]}}})
    assert unknown.status_code == 400 and unknown.json()["error"] == "INVALID_ARGUMENT"
    assert "liked" in unknown.json()["message"]
    bad = httpx.post(f"{url}/api/recommend", json={"profile_and_liked": {
        "profile": {**profile, "gender": "X"}, "liked": {"movie_ids": liked}}})
    assert bad.status_code == 400 and "gender" in bad.json()["message"]
