"""report.html in a real browser: headless Chromium (Debian's `chromium`) renders it,
the screenshot is not blank, and the console stays silent (the page has no scripts, so
any console line, e.g. a blocked script or resource, is a failure)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

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


def render(page: Path, tmp: Path) -> tuple[Image.Image, list[str]]:
    shot = tmp / f"{page.stem}.png"
    profile = tmp / f"profile-{page.stem}"
    done = subprocess.run(
        [
            chromium(),
            *FLAGS,
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

    # Control: the same page with a script in it must be caught (the policy blocks it
    # and Chromium logs that), so a silent console above means something.
    control = tmp_path / "control.html"
    control.write_text(page.read_text().replace("</body>", "<script>1</script></body>"))
    _, caught = render(control, tmp_path)
    assert caught, "the console check did not see a blocked inline script"
