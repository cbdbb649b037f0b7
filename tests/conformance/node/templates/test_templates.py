"""Template.build() from the unmodified Python SDK: steps, defaults, the
start command, failures, the layer cache and images from a registry."""

import os
import pathlib
import shutil
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
    alias = httpx.get(f"{API_URL}/templates/aliases/{name}", headers={"X-API-Key": API_KEY}, timeout=30)
    assert alias.status_code == 200, alias.text
    assert_no_build_leftovers(alias.json()["templateID"])


DATA_DIR = pathlib.Path(os.environ.get("HEARTH_DATA_DIR", "/var/lib/hearth"))


def build_vm_running(template_id):
    return subprocess.run(["pgrep", "-f", f"build {template_id}"], capture_output=True).returncode == 0


def build_leftovers(template_id):
    """A build's VM, staging directories and scratch files, as a list."""
    found = [f"build VM of {template_id}"] if build_vm_running(template_id) else []
    found += list((DATA_DIR / "v1" / "templates" / template_id).glob(".building-*"))
    scratch = DATA_DIR / "v1" / "tmp"
    found += list(scratch.iterdir()) if scratch.exists() else []
    return found


def assert_no_build_leftovers(template_id):
    """Nothing of a build that ended stays (its network slot goes with its
    VM); the node removes them as the build unwinds, within seconds."""
    deadline = time.monotonic() + 30
    while (left := build_leftovers(template_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert build_leftovers(template_id) == [], left


def test_unchanged_steps_come_from_the_cache():
    # The step cache outlives a node's database (it is keyed by content and
    # the team), so this run's steps carry a nonce no earlier run had.
    n = uuid.uuid4().hex[:8]
    first, second = [], []
    base = Template().from_template("base").run_cmd(f"echo one-{n} > /tmp/one").run_cmd("echo two > /tmp/two")
    build(base, unique("cache-a"), first)
    assert not any(m.startswith("CACHED") for m in messages(first))
    build(base, unique("cache-b"), second)
    cached = [m for m in messages(second) if m.startswith("CACHED")]
    # Every step and the snapshot itself: no build VM boots.
    assert len(cached) == 3, messages(second)
    assert "booting the build VM" not in messages(second)
    # Changing the second step re-runs only it.
    third = []
    changed = Template().from_template("base").run_cmd(f"echo one-{n} > /tmp/one").run_cmd("echo three > /tmp/two")
    build(changed, unique("cache-c"), third)
    cached = [m for m in messages(third) if m.startswith("CACHED")]
    assert cached == [f"CACHED [1] RUN echo one-{n} > /tmp/one"], messages(third)


def test_skip_cache_rebuilds_from_where_it_is_asked():
    steps = lambda t: t.run_cmd("echo one > /tmp/one").run_cmd("echo two > /tmp/two")  # noqa: E731
    build(steps(Template().from_template("base")), unique("force-a"))
    # The whole build (`force`): no step and no snapshot from the cache.
    forced = []
    build(steps(Template().from_template("base")), unique("force-b"), forced, skip_cache=True)
    assert not any(m.startswith("CACHED") for m in messages(forced)), messages(forced)
    # From the second step on (the step's `force`): the first is cached.
    partly = []
    template = Template().from_template("base").run_cmd("echo one > /tmp/one").skip_cache().run_cmd("echo two > /tmp/two")
    build(template, unique("force-c"), partly)
    cached = [m for m in messages(partly) if m.startswith("CACHED")]
    assert cached == ["CACHED [1] RUN echo one > /tmp/one"], messages(partly)


def test_from_dockerfile_and_the_e2b_base_image(tmp_path):
    """The SDK turns a Dockerfile into steps on the client; `FROM e2bdev/base`
    (what `from_base_image()` asks for) is hearth's own base, no internet."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("alpha\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM e2bdev/base:latest\n"
        "ENV STAGE=docker LEVEL=2\n"
        "COPY notes /opt/notes\n"
        "RUN cat /opt/notes/a.txt > /opt/notes/b.txt && whoami > /opt/notes/by\n"
        "WORKDIR /opt/notes\n"
        "USER user\n"
    )
    name = unique("dockerfile")
    build(Template(file_context_path=str(tmp_path)).from_dockerfile(str(dockerfile)), name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        run = lambda cmd: sbx.commands.run(cmd).stdout.strip()  # noqa: E731
        assert run("cat b.txt by") == "alpha\nroot"
        assert run("echo $STAGE $LEVEL; pwd; whoami") == "docker 2\n/opt/notes\nuser"
    finally:
        sbx.kill()
    name = unique("base-image")
    build(Template().from_base_image().run_cmd("echo from-base > /tmp/made"), name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.commands.run("cat /tmp/made; whoami").stdout.split() == ["from-base", "user"]
    finally:
        sbx.kill()


def test_an_unknown_image_fails_with_a_clear_message():
    template = Template().from_image("127.0.0.1:9/hearth-test/none:1").run_cmd("true")
    with pytest.raises(BuildException) as raised:
        build(template, unique("no-image"))
    assert "127.0.0.1:9" in str(raised.value)


REGISTRY = os.environ.get("HEARTH_TEST_REGISTRY")


@pytest.fixture(scope="module")
def busybox_rootfs(tmp_path_factory):
    """A minimal root filesystem shaped like Alpine's (whose own packages
    this machine cannot reach): busybox as /bin/sh (ash) and its applets,
    /etc/shadow, no tini, no envd, no user, no coreutils, no bash — what
    hearth adds must make it a sandbox."""
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
    (root / "etc" / "shadow").write_text("root:*:19000:0:::::\n")
    (root / "etc" / "shadow").chmod(0o640)
    (root / "etc" / "os-release").write_text('ID=alpine\nNAME="Alpine-shaped test image"\n')
    return root


def push_image(registry, name, rootfs, *extra):
    subprocess.run(
        [os.environ["PUSH_IMAGE_BIN"], "--registry", registry, "--name", name, "--rootfs", str(rootfs),
         "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *extra],
        check=True,
    )
    return f"{registry}/{name}"


@pytest.fixture(scope="module")
def busybox_image(busybox_rootfs):
    if not REGISTRY:
        pytest.fail("HEARTH_TEST_REGISTRY is not set: run tests/conformance/run-node.sh")
    return push_image(REGISTRY, "hearth-test/busybox:1", busybox_rootfs, "--env", "IMAGE_VAR=from-image")


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
        assert sbx.commands.run("id -u").stdout.strip() == "1000"
        assert sbx.commands.run("grep -c '^user:' /etc/shadow", user="root").stdout.strip() == "1"
        assert sbx.commands.run("echo $IMAGE_VAR $STEP_VAR").stdout.strip() == "from-image from-step"
        sbx.files.write("/home/user/f.txt", "written through envd")
        assert sbx.files.read("/home/user/f.txt") == "written through envd"
    finally:
        sbx.kill()


def test_a_registry_login_is_used_and_a_wrong_one_is_refused(busybox_rootfs, tmp_path):
    registry = os.environ.get("HEARTH_TEST_LOGIN_REGISTRY")
    if not registry:
        pytest.fail("HEARTH_TEST_LOGIN_REGISTRY is not set: run tests/conformance/run-node.sh")
    user, password = os.environ["HEARTH_TEST_REGISTRY_USER"], os.environ["HEARTH_TEST_REGISTRY_PASSWORD"]
    # A layer of its own, so that the pull fetches it through the login
    # (not from the blob cache the open registry's image filled).
    rootfs = tmp_path / "private-rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "etc" / "private-marker").write_text(uuid.uuid4().hex)
    image = push_image(registry, "hearth-test/private:1", rootfs, "--username", user, "--password", password)
    name = unique("login")
    build(Template().from_image(image, username=user, password=password).run_cmd("echo in > /tmp/in"), name)
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.commands.run("cat /tmp/in").stdout.strip() == "in"
        assert sbx.files.read("/etc/private-marker") == (rootfs / "etc" / "private-marker").read_text()
    finally:
        sbx.kill()
    for login in ({"username": user, "password": "not-" + password}, {}):
        with pytest.raises(BuildException) as raised:
            build(Template().from_image(image, **login).run_cmd("true"), unique("login-bad"))
        message = str(raised.value)
        assert registry in message and ("credentials" in message or "login" in message), message
        assert password not in message


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
    assert build_vm_running(info.template_id)
    r = httpx.delete(f"{API_URL}/templates/{info.template_id}", headers=headers, timeout=60)
    assert r.status_code == 204, r.text
    # The build VM goes within seconds, and with it the build's files.
    deadline = time.monotonic() + 30
    while build_vm_running(info.template_id):
        assert time.monotonic() < deadline, "the build VM outlived its template"
        time.sleep(0.2)
    assert httpx.get(f"{API_URL}/templates/{info.template_id}", headers=headers, timeout=30).status_code == 404
    assert_no_build_leftovers(info.template_id)


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory):
    """A stock Debian image: hearth's own cached debootstrap rootfs (bash,
    python3, apt, sudo) seen through an overlay without its `user` (no
    account, group, home or sudoers entry), as a Debian image from a
    registry comes."""
    if not REGISTRY:
        pytest.fail("HEARTH_TEST_REGISTRY is not set: run tests/conformance/run-node.sh")
    images = sorted((DATA_DIR / "v1/artifacts/rootfs-base").glob("*/base.ext4"), key=lambda p: p.stat().st_mtime)
    assert images, "no cached Debian rootfs: hearth up builds one"
    work = tmp_path_factory.mktemp("debian-rootfs")
    lower, upper, scratch, merged = (work / d for d in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, scratch, merged):
        d.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(images[-1]), str(lower)], check=True)
    try:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={scratch}", str(merged)], check=True)
        try:
            for table in ("passwd", "shadow", "group", "gshadow"):
                path = merged / "etc" / table
                if path.exists():
                    kept = [line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith("user:") and not line.startswith("user-")]
                    path.write_text("".join(kept).replace(",user\n", "\n").replace(":user\n", ":\n"))
            shutil.rmtree(merged / "home" / "user", ignore_errors=True)
            (merged / "etc" / "sudoers.d" / "user").unlink(missing_ok=True)
            assert "user:" not in (merged / "etc" / "passwd").read_text()
            subprocess.run(
                [os.environ["PUSH_IMAGE_BIN"], "--registry", REGISTRY, "--name", "hearth-test/debian:12",
                 "--rootfs", str(merged), "--compression", "none",
                 "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                check=True,
            )
        finally:
            subprocess.run(["umount", str(merged)], check=True)
    finally:
        subprocess.run(["umount", str(lower)], check=True)
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
        # hearth made the account: uid 1000, a home, passwordless sudo.
        assert sbx.commands.run("id -u; echo $HOME; sudo -n id -un").stdout.split() == ["1000", "/home/user", "root"]
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
            # Tools that keep their own roots are pointed at the system bundle.
            envs = sbx.commands.run("echo $NODE_EXTRA_CA_CERTS $REQUESTS_CA_BUNDLE").stdout.split()
            assert envs == ["/etc/ssl/certs/ca-certificates.crt"] * 2, template_name
            if template_name == "base":
                # update-ca-certificates keeps the extra certificates.
                extra = sbx.files.read("/usr/local/share/ca-certificates/hearth-extra.crt")
                assert last_certificate(extra) == last_certificate(HOST_BUNDLE.read_text())
                # Node (npm's runtime) over HTTPS, with the host's own node binary.
                sbx.files.write("/tmp/node", HOST_NODE.read_bytes())
                status = sbx.commands.run(
                    "chmod +x /tmp/node && /tmp/node -e "
                    "\"fetch('https://registry.npmjs.org/six').then(r => console.log(r.status))\"",
                    timeout=180,
                ).stdout.strip()
                assert status == "200"
        finally:
            sbx.kill()


HOST_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
HOST_NODE = pathlib.Path(shutil.which("node") or "/usr/bin/node").resolve()


def last_certificate(pem):
    return pem.strip().split("-----BEGIN CERTIFICATE-----")[-1]
