"""A browser opens a page a sandbox serves, as a person shown an agent's
web app would: headless Chromium (Debian's `chromium`) at
`https://<port>-<id>.hearth.localhost:<port>/`, which it resolves to
loopback by itself, trusting hearth's CA from an NSS database of its own
(as `certutil` imports it into a user's browser) and nothing else.
"""

import os
import shutil
import subprocess
import time

import httpx
import pytest

PAGE = "<html><body><h1 id='made-in-a-sandbox'>served by a hearth sandbox</h1></body></html>\n"


@pytest.fixture
def browser_home(tmp_path):
    """A HOME whose NSS database trusts hearth's CA for TLS servers."""
    if not shutil.which("chromium") or not shutil.which("certutil"):
        pytest.fail("chromium and certutil are needed: run scripts/install-deps.sh --test")
    nssdb = tmp_path / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "hearth local CA",
         "-i", os.environ["NODE_EXTRA_CA_CERTS"]],
        check=True,
    )
    return tmp_path


def test_chromium_opens_a_sandboxs_https_url(sandbox, browser_home):
    sandbox.files.write("/tmp/site/index.html", PAGE)
    sandbox.commands.run("cd /tmp/site && python3 -m http.server 3000", background=True)
    url = f"https://{sandbox.get_host(3000)}/"
    deadline = time.time() + 30
    while httpx.get(url, timeout=30).status_code == 502 and time.time() < deadline:
        time.sleep(0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
    env["HOME"] = str(browser_home)
    shown = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={browser_home / 'profile'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "served by a hearth sandbox" in shown.stdout, (shown.stdout[-2000:], shown.stderr[-2000:])
