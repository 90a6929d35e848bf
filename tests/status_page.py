"""The /status page as headless Chromium renders it (Debian's `chromium`), for the status tests
on the fake stack (tests/gateway/test_status.py) and on the real one (tests/stack/test_stack.py)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def rendered(root: str) -> str:
    """The status page's DOM once its script has run, as headless Chromium (Debian's `chromium`)
    renders it; the script's first read of /admin/status included."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
    result = subprocess.run([chromium, *args, f"{root}/status"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return re.sub(r"<script>.*</script>", "", result.stdout, flags=re.S)


def cells(dom: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table}">(.*?)</table>', dom, re.S)
    assert body is not None, dom
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body[1])][1:]
