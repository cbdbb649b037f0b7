"""Template.build() from the unmodified Python SDK: steps, defaults, the
start command, failures, the layer cache and images from a registry."""

import os
import pathlib
import subprocess
import time
import uuid

import httpx
import pytest

from e2b import Sandbox, Template, wait_for_port
from e2b.exceptions import BuildException

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def build(template, name, logs=None, **kwargs):
    entries = logs if logs is not None else []
    return Template.build(
        template,
        name,
        cpu_count=1,
        memory_mb=512,
        on_build_logs=entries.append,
        **kwargs,
    )


def messages(entries):
    return [e.message for e in entries]


def proxied(sandbox_id, port, path="/"):
    return httpx.get(
        API_URL + path,
        headers={"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)},
        timeout=30,
    )


@pytest.fixture
def context_dir(tmp_path):
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    (app / "hello.txt").write_text("hello from the build context\n")
    (app / "sub" / "nested.txt").write_text("nested\n")
    script = app / "run.sh"
    script.write_text("#!/bin/sh\necho script ran\n")
    script.chmod(0o755)
    (tmp_path / "single.cfg").write_text("key=value\n")
    return tmp_path


def test_steps_defaults_and_start_command_reach_sandboxes(context_dir):
    name = unique("steps")
    template = (
        Template(file_context_path=str(context_dir))
        .from_template("base")
        .copy("app/", "/home/user/app/")
        .copy("single.cfg", "/etc/hearth-test/", user="root", mode=0o600)
        .run_cmd("id -un > /tmp/built-as && echo made > /tmp/marker")
        .run_cmd("touch /made-by-root", user="root")
        .set_envs({"GREETING": "hello world", "EMPTY_OK": "x"})
        .set_workdir("/home/user/app")
        .set_start_cmd("python3 -m http.server 8000", wait_for_port(8000))
    )
    logs = []
    build(template, name, logs)
    assert any("COPY app/ /home/user/app/" in m for m in messages(logs))

    sbx = Sandbox.create(name, timeout=120)
    try:
        run = lambda cmd, **kw: sbx.commands.run(cmd, **kw).stdout.strip()  # noqa: E731
        # COPY: a directory's contents merge into the target, owned by the
        # build's user; a file goes into a directory target with its mode.
        assert run("cat /home/user/app/hello.txt") == "hello from the build context"
        assert run("cat /home/user/app/sub/nested.txt") == "nested"
        assert run("stat -c '%U %a' /home/user/app/hello.txt") == "user 644"
        assert run("stat -c '%a' /home/user/app/run.sh") == "755"
        assert run("/home/user/app/run.sh") == "script ran"
        assert run("sudo stat -c '%U %a' /etc/hearth-test/single.cfg") == "root 600"
        # RUN as the default user and as root.
        assert run("cat /tmp/built-as") == "user"
        assert run("stat -c %U /made-by-root") == "root"
        # ENV, WORKDIR and the user are the sandbox's defaults.
        assert run("echo $GREETING") == "hello world"
        assert run("pwd") == "/home/user/app"
        assert run("whoami") == "user"
        # The start command was running when the snapshot was taken.
        r = proxied(sbx.sandbox_id, 8000, "/hello.txt")
        assert r.status_code == 200 and r.text == "hello from the build context\n"
    finally:
        sbx.kill()


def test_a_user_step_changes_the_default_user():
    name = unique("root-user")
    template = Template().from_template("base").set_user("root").set_workdir("/srv")
    build(template, name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.commands.run("whoami").stdout.strip() == "root"
        assert sbx.commands.run("pwd").stdout.strip() == "/srv"
    finally:
        sbx.kill()


def test_a_failing_step_names_itself_and_leaves_nothing():
    name = unique("failing")
    template = (
        Template()
        .from_template("base")
        .run_cmd("echo before")
        .run_cmd("echo about to fail && exit 3")
        .run_cmd("echo never")
    )
    logs = []
    with pytest.raises(BuildException) as raised:
        build(template, name, logs)
    assert "exited with code 3" in str(raised.value)
    assert "about to fail" in messages(logs)
    assert "never" not in messages(logs)
    # The SDK points at the builder call of the failing step (reason.step = 2).
    trace = "".join(__import__("traceback").format_tb(raised.value.__traceback__))
    assert 'run_cmd("echo about to fail && exit 3")' in trace
    # No build VM is left running.
    out = subprocess.run(["pgrep", "-f", f"build {name}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_unchanged_steps_come_from_the_cache():
    first, second = [], []
    base = Template().from_template("base").run_cmd("echo one > /tmp/one").run_cmd("echo two > /tmp/two")
    build(base, unique("cache-a"), first)
    assert not any(m.startswith("CACHED") for m in messages(first))
    started = time.monotonic()
    build(base, unique("cache-b"), second)
    cached = [m for m in messages(second) if m.startswith("CACHED")]
    # Every step and the snapshot itself: no build VM boots.
    assert len(cached) == 3, messages(second)
    assert "booting the build VM" not in messages(second)
    # Changing the second step re-runs only it.
    third = []
    changed = Template().from_template("base").run_cmd("echo one > /tmp/one").run_cmd("echo three > /tmp/two")
    build(changed, unique("cache-c"), third)
    cached = [m for m in messages(third) if m.startswith("CACHED")]
    assert cached == ["CACHED [1] RUN echo one > /tmp/one"], messages(third)
    assert time.monotonic() - started > 0


def test_an_unknown_image_fails_with_a_clear_message():
    template = Template().from_image("127.0.0.1:9/hearth-test/none:1").run_cmd("true")
    with pytest.raises(BuildException) as raised:
        build(template, unique("no-image"))
    assert "127.0.0.1:9" in str(raised.value)


REGISTRY = os.environ.get("HEARTH_TEST_REGISTRY")


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory):
    """A minimal image: busybox as /bin/sh and its applets, no tini, no
    envd, no user, no coreutils — what hearth adds must make it a sandbox."""
    if not REGISTRY:
        pytest.fail("HEARTH_TEST_REGISTRY is not set: run tests/conformance/run-node.sh")
    root = tmp_path_factory.mktemp("busybox-rootfs")
    for d in ("bin", "etc", "tmp", "root"):
        (root / d).mkdir()
    busybox = root / "bin" / "busybox"
    busybox.write_bytes(open("/bin/busybox", "rb").read())
    busybox.chmod(0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    reference = f"{REGISTRY}/hearth-test/busybox:1"
    subprocess.run(
        [os.environ["PUSH_IMAGE_BIN"], "--registry", REGISTRY, "--name", "hearth-test/busybox:1",
         "--rootfs", str(root), "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
         "--env", "IMAGE_VAR=from-image"],
        check=True,
    )
    return reference


def test_a_bare_busybox_image_becomes_a_template(busybox_image):
    name = unique("busybox")
    template = (
        Template()
        .from_image(busybox_image)
        .run_cmd("echo built-in-busybox > /tmp/made")
        .set_envs({"STEP_VAR": "from-step"})
    )
    build(template, name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.commands.run("cat /tmp/made").stdout.strip() == "built-in-busybox"
        assert sbx.commands.run("whoami").stdout.strip() == "user"
        assert sbx.commands.run("echo $IMAGE_VAR $STEP_VAR").stdout.strip() == "from-image from-step"
        sbx.files.write("/home/user/f.txt", "written through envd")
        assert sbx.files.read("/home/user/f.txt") == "written through envd"
    finally:
        sbx.kill()


def test_hearth_template_build_takes_a_dockerfile(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "page.txt").write_text("from the cli\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM e2bdev/base\n"
        "ARG FLAVOUR=plain\n"
        "ENV GREETING=\"hi there\"\n"
        "COPY site /opt/site\n"
        "RUN echo $FLAVOUR > /opt/site/flavour && \\\n"
        "    chmod 0644 /opt/site/flavour\n"
        "WORKDIR /opt/site\n"
    )
    name = unique("cli")
    out = subprocess.run(
        [os.environ["HEARTH_BIN"], "template", "build", str(tmp_path), "--name", name,
         "--cpu-count", "1", "--memory-mb", "512"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "COPY site /opt/site" in out.stdout
    sbx = Sandbox.create(name, timeout=60)
    try:
        run = lambda cmd: sbx.commands.run(cmd).stdout.strip()  # noqa: E731
        assert run("cat page.txt flavour") == "from the cli\nplain"
        assert run("echo $GREETING") == "hi there"
        # Docker's root while building, E2B's user in the sandbox.
        assert run("whoami") == "user"
        assert run("stat -c %U /opt/site/page.txt") == "root"
    finally:
        sbx.kill()
    # A Dockerfile that fails names its step and exits non-zero.
    (tmp_path / "Dockerfile").write_text("FROM e2bdev/base\nRUN exit 4\n")
    out = subprocess.run(
        [os.environ["HEARTH_BIN"], "template", "build", str(tmp_path), "--name", unique("cli-bad"),
         "--cpu-count", "1", "--memory-mb", "512"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )
    assert out.returncode != 0 and "exited with code 4" in out.stderr, out.stderr


def test_deleting_a_template_cancels_its_build():
    name = unique("cancel")
    template = Template().from_template("base").run_cmd("echo started-long-step; sleep 600")
    info = Template.build_in_background(template, name, cpu_count=1, memory_mb=512)
    headers = {"X-API-Key": API_KEY}
    status_url = f"{API_URL}/templates/{info.template_id}/builds/{info.build_id}/status"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = httpx.get(status_url, headers=headers, timeout=30).json()
        if any("started-long-step" in e["message"] for e in body["logEntries"]):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the long step never started")
    assert subprocess.run(["pgrep", "-f", f"build {info.template_id}"], capture_output=True).returncode == 0
    r = httpx.delete(f"{API_URL}/templates/{info.template_id}", headers=headers, timeout=60)
    assert r.status_code == 204, r.text
    # The build VM goes within seconds, and with it the build's files.
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", f"build {info.template_id}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the build VM outlived its template"
        time.sleep(0.2)
    assert httpx.get(f"{API_URL}/templates/{info.template_id}", headers=headers, timeout=30).status_code == 404


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory):
    """A Debian image: hearth's own cached Debian rootfs (bash, python3,
    apt, its own /etc/passwd with `user`), mounted read-only and pushed."""
    if not REGISTRY:
        pytest.fail("HEARTH_TEST_REGISTRY is not set: run tests/conformance/run-node.sh")
    data = pathlib.Path(os.environ.get("HEARTH_DATA_DIR", "/var/lib/hearth"))
    images = sorted((data / "v1/artifacts/rootfs-base").glob("*/base.ext4"), key=lambda p: p.stat().st_mtime)
    assert images, "no cached Debian rootfs: hearth up builds one"
    mount = tmp_path_factory.mktemp("debian-rootfs")
    subprocess.run(["mount", "-o", "loop,ro", str(images[-1]), str(mount)], check=True)
    try:
        subprocess.run(
            [os.environ["PUSH_IMAGE_BIN"], "--registry", REGISTRY, "--name", "hearth-test/debian:12",
             "--rootfs", str(mount), "--compression", "none",
             "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            check=True,
        )
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    return f"{REGISTRY}/hearth-test/debian:12"


def test_a_debian_image_becomes_a_template(debian_image):
    name = unique("debian")
    template = (
        Template()
        .from_image(debian_image)
        .run_cmd("python3 -c 'import sys; print(sys.version_info[0])' > /tmp/py", user="root")
        .set_start_cmd("python3 -m http.server 8001 --directory /tmp", wait_for_port(8001))
    )
    build(template, name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.commands.run("cat /tmp/py; whoami; echo $SHELL").stdout.split() == ["3", "user", "/bin/bash"]
        assert proxied(sbx.sandbox_id, 8001, "/py").text == "3\n"
    finally:
        sbx.kill()


def test_builds_and_sandboxes_trust_the_hosts_ca_bundle():
    """These machines reach the package registries through a TLS-intercepting
    gateway whose CA only the host trusts; run-node.sh gives hearth the
    host's bundle (`--ca-bundle`), so HTTPS works in build steps and in
    sandboxes, of built templates and of `base`."""
    url = "https://pypi.org/simple/six/"
    name = unique("https")
    template = Template().from_template("base").run_cmd(
        f"curl -sSf -o /dev/null {url} && echo reached > /tmp/https"
    )
    build(template, name)
    for template_name in (name, "base"):
        sbx = Sandbox.create(template_name, timeout=60)
        try:
            code = sbx.commands.run(f"curl -sS -o /dev/null -w '%{{http_code}}' {url}").stdout
            assert code == "200", template_name
            if template_name == name:
                assert sbx.commands.run("cat /tmp/https").stdout == "reached\n"
            assert "cert = /etc/ssl/certs/ca-certificates.crt" in sbx.files.read("/etc/pip.conf")
        finally:
            sbx.kill()
