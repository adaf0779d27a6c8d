"""report.html in a real browser: headless Chromium (Debian's `chromium`) renders it,
the screenshot is not blank, and the console stays silent (the page has no scripts, so
any console line, e.g. a blocked script or resource, is a failure). The DOM Chromium
builds holds the per-rule intervals, the rule confusion table and a gallery with true
positives; a locator's box drawn on a thumbnail shows on the screen; report.md has the
same sections."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from judge.engine.verdict import (
    AlternativeEvidence,
    Box,
    PreconditionEvidence,
    RuleVerdict,
    Verdict,
)
from judge.evaluate.datasets import Example
from judge.evaluate.metrics import Scored
from judge.evaluate.report import MethodResult, build_report
from judge.evaluate.report_html import BOX_COLOUR, write_html
from judge.evaluate.report_md import write_markdown
from tests.test_eval_command import FAKE, cli, make_policy, make_set

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1200,1600",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is missing: apt-get install -y chromium")


def render(page: Path, tmp: Path, height: int = 1600) -> tuple[Image.Image, list[str]]:
    shot = tmp / f"{page.stem}.png"
    profile = tmp / f"profile-{page.stem}"
    done = subprocess.run(
        [
            chromium(),
            *FLAGS,
            f"--window-size=1200,{height}",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), done.stderr[-2000:]
    problems = [
        line
        for line in done.stderr.splitlines()
        if ":CONSOLE" in line or "Uncaught" in line or "Refused to" in line
    ]
    return Image.open(shot).convert("RGB"), problems


def dom(page: Path, tmp: Path) -> str:
    """The page's DOM as Chromium parsed it."""
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile-dom'}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "<body>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path)
    out = tmp_path / "out"
    assert (
        cli(
            "eval",
            str(data),
            "-c",
            str(policy),
            "-o",
            str(out),
            "--baselines",
            "prior",
            "--bootstrap",
            "50",
            *FAKE,
        )
        == 0
    )
    page = out / "report.html"
    image, problems = render(page, tmp_path)
    assert problems == [], problems
    # Not blank: real contrast, and many distinct colours (text, tables, bars).
    stat = ImageStat.Stat(image.convert("L"))
    assert stat.stddev[0] > 10
    assert len(image.getcolors(1 << 20) or []) > 50

    # The new parts, as the browser parsed them.
    parsed = dom(page, tmp_path)
    rules = parsed.split('<table class="rules">', 1)[1].split("</table>", 1)[0]
    assert "Recall [95% CI]" in rules and "% [" in rules  # a Wilson interval per rate
    assert '<table class="rule-confusion">' in parsed and "truth \\ named" in parsed
    assert "true positive" in parsed and parsed.count("data:image/png;base64,") >= 4
    md = (out / "report.md").read_text()
    for section in ("## Headline", "## Per rule", "## Rule confusion", "## Confusion matrix",
                    "## Cost", "## Examples", "### true positive"):
        assert section in md, section

    # Control: the same page with a script in it must be caught (the policy blocks it
    # and Chromium logs that), so a silent console above means something.
    control = tmp_path / "control.html"
    control.write_text(page.read_text().replace("</body>", "<script>1</script></body>"))
    _, caught = render(control, tmp_path)
    assert caught, "the console check did not see a blocked inline script"


def _boxed_report(tmp: Path) -> tuple[str, str]:
    """A report whose one true positive was decided with a located box, as HTML and
    Markdown; the box is given in a model view twice the image's size."""
    image = tmp / "scene.png"
    Image.new("RGB", (200, 200), (235, 235, 235)).save(image)
    example = Example(id="scene", label="unsafe", rules=("knife",), path=image)
    box = Box(x0=100, y0=100, x1=300, y1=300, confidence=0.91, label="knife")
    alt = AlternativeEvidence(
        statement="a knife", outcome="met", stage="center", m=0.7, prior=0.3, d=0.4,
        a1=-0.09, a2=0.56, beta=0.6, masked_m=0.05, box=box,
    )
    rule = RuleVerdict(
        rule_id="knife", outcome="violated", decisive_precondition=0,
        preconditions=[PreconditionEvidence(index=0, outcome="met", alternatives=[alt])],
    )
    other = RuleVerdict(rule_id="gun", outcome="not_violated", decisive_precondition=0)
    verdict = Verdict(image_id="scene", outcome="unsafe", violated=["knife"],
                      rules=[rule, other], image_size=(400, 400))
    record = Scored(id="scene", truth_unsafe=True, outcome="unsafe",
                    truth_rules=frozenset({"knife"}), predicted_rules=frozenset({"knife"}),
                    score=0.9)
    result = MethodResult("full", "method", "m", [record], verdicts={"scene": verdict})
    report = build_report(
        dataset={"name": "one", "images": 1}, constitution={"name": "p"}, results=[result],
        examples={"scene": example}, rule_ids=["knife", "gun"], resamples=0,
    )
    return write_html(report, {"scene": example}, {"knife": "no knives"}), write_markdown(report)


def test_gallery_draws_the_deciding_box(tmp_path: Path) -> None:
    page, md = _boxed_report(tmp_path)
    path = tmp_path / "boxed.html"
    path.write_text(page)
    image, problems = render(path, tmp_path, height=2400)  # the gallery is at the end
    assert problems == [], problems
    # The box (model view 400 px, image 200 px, so (50, 50)-(150, 150) on the image) is
    # drawn in magenta: the screen shows it.
    magenta = sum(
        count
        for count, (r, g, b) in image.getcolors(1 << 22) or []
        if r > 200 and g < 80 and b > 200
    )
    assert magenta > 100, magenta
    assert BOX_COLOUR == (255, 0, 255)
    assert "located: knife 0.91" in page and "gun" not in page.split("class=gallery")[1]
    # report.md tells the same story, without the picture.
    example = md.split("### true positive", 1)[1]
    assert "located: knife 0.91" in example and "masked M 0.05" in example
    assert "gun" not in example  # only the deciding rule's evidence
