"""Template.build() from the unmodified Python SDK: steps, defaults, the
start command, failures, the layer cache and images from a registry."""

import os
import stat
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
    assert len(cached) == 2, messages(second)
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
