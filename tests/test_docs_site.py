"""The built reference site (``make docs``) renders the acquisition API in a real browser.

Headless Chromium (Debian's ``chromium``) loads ``site/api/acquisition.html`` and dumps the DOM
after its scripts ran; every public name of :mod:`alkernels.acquisition` must be a rendered
definition there. Without a browser or a built site the test skips, naming what is missing;
``ALKERNELS_DOCS_CHECK=1`` (CI, after ``make docs``) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from alkernels import acquisition

SITE = Path(__file__).resolve().parents[1] / "site"
REQUIRED = os.environ.get("ALKERNELS_DOCS_CHECK") == "1"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _require(found: object, missing: str) -> None:
    if not found:
        (pytest.fail if REQUIRED else pytest.skip)(missing)


class _Definitions(HTMLParser):
    """The ids of ``<dt>`` elements (Sphinx puts each documented object's id on its signature)
    and the page's ``<h1>`` text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.title = ""
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "dt":
            self.ids.update(value for name, value in attrs if name == "id" and value)
        self._in_h1 = self._in_h1 or tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        self._in_h1 = self._in_h1 and tag != "h1"

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.title += data


def dump_dom(page: Path, browser: str, profile: Path) -> str:
    """The DOM of ``page`` after Chromium rendered it."""
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_acquisition_api_page_renders_every_public_name(tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    _require(browser, "no chromium on PATH (Debian: apt-get install chromium)")
    page = SITE / "api" / "acquisition.html"
    _require(page.is_file(), f"no built site at {page} (make docs)")
    parser = _Definitions()
    parser.feed(dump_dom(page, browser, tmp_path / "profile"))
    assert "alkernels.acquisition" in parser.title
    missing = [name for name in acquisition.__all__ if f"alkernels.acquisition.{name}" not in parser.ids]
    assert not missing, f"not rendered on {page.name}: {missing}"
