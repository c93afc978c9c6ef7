"""End to end in headless Chromium (Debian's `chromium` package): a participant clicks through the survey."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from survey_client import running_server
from survey_testdata import COMPLETION_CODE

from pv.survey.manifest import load_manifest

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium chromium-driver"),
]


def launch(playwright):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )


def test_participant_completes_the_survey_by_clicking(study, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    manifest = load_manifest(study)
    labels = {q["id"]: {o["label"]: o["id"] for o in q["options"]} for q in manifest["questions"]}
    db_path = tmp_path / "responses.sqlite"
    clicked: dict[str, str] = {}
    problems: list[str] = []
    with running_server(study, db_path) as base, sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})  # a laptop screen
            page.set_default_timeout(20_000)
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(base + "/")
            page.click("#start")
            assert page.locator("h1").inner_text() == manifest["arms"]["pv"]["title"]
            page.click("#begin")
            for number in range(1, len(manifest["questions"]) + 1):
                assert page.locator(".progress label").inner_text() == f"Question {number} of {len(manifest['questions'])}"
                if number == 3:  # a reload continues at the same question
                    page.reload()
                    assert page.locator(".progress label").inner_text() == f"Question 3 of {len(manifest['questions'])}"
                assert page.eval_on_selector("figure img", "img => img.complete && img.naturalWidth") == 130
                if number == 1:  # labelled panels; image, options and button on one screen without scrolling
                    assert page.locator(".panel-titles").inner_text().split("\n") == ["Photo", manifest["arms"]["pv"]["title"]]
                    assert page.locator("figure img").bounding_box()["width"] >= 500
                    button = page.locator("#next").bounding_box()
                    assert button["y"] + button["height"] <= 800
                qid = page.locator("input[name=question]").get_attribute("value")
                option = page.locator("label.option").nth(number % 5)
                clicked[qid] = labels[qid][option.inner_text().strip()]
                option.click()
                page.click("#next")
            page.wait_for_selector("#done")
            assert page.url.endswith("/done")
            font = page.eval_on_selector("body", "body => getComputedStyle(body).fontFamily")
            assert "system-ui" in font  # the stylesheet loaded under the CSP
        finally:
            browser.close()
    assert not problems, problems  # no CSP violations or failed loads
    with closing(sqlite3.connect(db_path)) as conn:
        stored = dict(conn.execute("SELECT question_id, option_id FROM answers").fetchall())
        completed = conn.execute("SELECT completed_at FROM participants").fetchall()
    assert stored == clicked and len(stored) == len(manifest["questions"])
    assert len(completed) == 1 and completed[0][0] is not None


@pytest.mark.slow
def test_a_prolific_participant_reaches_the_completion_redirect_once(platform_study, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    manifest = load_manifest(platform_study)
    check = manifest["attention_checks"][0]
    instructed = next(o["label"] for o in check["options"] if o["id"] == check["answer"])
    completion = manifest["platform"]["completion_url"]
    assert completion == f"https://app.prolific.com/submissions/complete?cc={COMPLETION_CODE}"
    db_path = tmp_path / "responses.sqlite"
    pid = "60aa0c0ffee0000000000042"
    link = f"/?PROLIFIC_PID={pid}&STUDY_ID=6500000000000000000000ab&SESSION_ID=sess0000000000000001"
    reached: list[str] = []
    with running_server(platform_study, db_path) as base, sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            context = browser.new_context()
            def prolific(route):  # no internet: Prolific's completion page is played by the test
                reached.append(route.request.url)
                route.fulfill(status=200, content_type="text/html", body="<h1 id='prolific'>Prolific: submission complete</h1>")

            context.route("https://app.prolific.com/**", prolific)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(base + link)
            page.click("#start")
            page.click("#begin")
            for _ in range(len(manifest["questions"]) + 1):
                if page.locator("input[name=question]").get_attribute("value") == check["id"]:
                    page.locator("label.option", has_text=instructed).click()
                else:
                    page.locator("label.option").first.click()
                page.click("#next")
            page.wait_for_selector("#completion-code")
            assert page.locator("#completion-code").inner_text() == COMPLETION_CODE
            page.wait_for_url(completion)  # the end page returns the participant to Prolific
            assert page.locator("#prolific").inner_text() == "Prolific: submission complete"
            again = browser.new_context().new_page()  # the same Prolific ID in another browser
            again.goto(base + link)
            assert again.locator("#refused").inner_text() == "You have already taken part"
        finally:
            browser.close()
    assert reached == [completion]
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(completed_at), COUNT(platform_hash) FROM participants").fetchone() == (1, 1, 1)
        answers = dict(conn.execute("SELECT question_id, option_id FROM answers").fetchall())
    assert answers[check["id"]] == check["answer"]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("responses.sqlite*") if not p.name.endswith(".keys"))
    assert pid.encode() not in raw
