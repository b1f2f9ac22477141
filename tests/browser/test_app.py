import os
from pathlib import Path

SHOTS = Path(os.environ.get("IVT_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "screenshots"))


def test_overview_shows_workspace_and_a_sample(app_url, page):
    page.goto(app_url, wait_until="load", timeout=60_000)
    page.get_by_text("IVT Studio").first.wait_for()
    page.get_by_text("ground truth (green)").wait_for(timeout=30_000)
    page.locator("img").first.wait_for()
    assert "shapes" in page.content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)


def test_sample_slider_changes_sample(app_url, page):
    page.goto(app_url, wait_until="load", timeout=60_000)
    caption = page.get_by_text("ground truth (green)")
    caption.wait_for(timeout=30_000)
    before = caption.inner_text()
    number = page.locator("input[type=number]:visible").first
    number.fill("5")
    number.press("Enter")
    page.wait_for_function(
        "(before) => !document.body.innerText.includes(before)", arg=before.split("\n")[-1], timeout=30_000)


def test_explore_steps_through_a_sample_with_the_keyboard(app_url, page):
    page.goto(app_url, wait_until="load", timeout=60_000)
    page.get_by_role("tab", name="Explore").click()
    page.get_by_text("step 0 of 2").wait_for(timeout=30_000)
    assert page.get_by_text("oracle (uses ground truth)").count() >= 1
    slider = page.locator("input[type=range]").last
    slider.focus()
    slider.press("ArrowRight")
    page.get_by_text("step 1 of 2").wait_for(timeout=30_000)
    page.get_by_text("Move it.").first.wait_for(timeout=30_000)
    slider.press("ArrowRight")
    page.get_by_text("step 2 of 2").wait_for(timeout=30_000)
    page.get_by_text("no box found").first.wait_for(timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "explore.png"), full_page=True)


def test_compare_two_runs(app_url, page):
    page.goto(app_url, wait_until="load", timeout=60_000)
    page.get_by_role("tab", name="Compare").click()
    page.get_by_text("common samples").first.wait_for(timeout=30_000)
    assert page.get_by_text("20 common samples").count() == 1
    page.get_by_text("wins").first.wait_for()
    page.locator(".js-plotly-plot").last.wait_for()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
