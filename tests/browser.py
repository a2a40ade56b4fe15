"""Headless Chromium for the tests that look at pages as a user does: Debian's /usr/bin/chromium driven by
Playwright (whose own browser download cannot run on these machines), a fresh profile per test, no background
traffic, and a log of every request the page makes."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM = Path("/usr/bin/chromium")
# No sync, updates, first-run pages or GPU: nothing but the page under test talks, and it starts fast.
ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class Requests:
    """Every URL the page asked for; those not on this machine (not file://, data:, blob: or loopback)."""

    urls: list[str] = field(default_factory=list)

    def record(self, request: Any) -> None:
        self.urls.append(request.url)

    @property
    def outside(self) -> list[str]:
        return [url for url in self.urls if not is_local(url)]


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("file", "data", "blob", "about"):
        return True
    return parsed.hostname in LOOPBACK


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1600, 1000)) -> Iterator[tuple[Any, Requests]]:
    """A page in a fresh headless Chromium and the record of its requests. Requests to other machines are
    aborted (and stay in the record, so a test can fail on them): a test never reaches off this machine."""
    if not CHROMIUM.is_file():
        raise AssertionError(f"{CHROMIUM} is missing: `make test` installs it (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pipelab-chromium-")
    requests = Requests()
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("request", requests.record)
                page.route("**/*", lambda route: route.continue_() if is_local(route.request.url) else route.abort())
                yield page, requests
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
