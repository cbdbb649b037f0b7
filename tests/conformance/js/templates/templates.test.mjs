// Template builds through the unmodified E2B JS SDK against `hearth up`
// (real build VMs): a Dockerfile turned into steps by the SDK, defaults and
// the start command in the sandboxes, an image from a registry that wants a
// login, the layer cache, and a failing step. Run by
// tests/conformance/run-node.sh (inside scripts/with-test-registry.sh).
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'

import { BuildError, Sandbox, Template, waitForPort } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_DOMAIN', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run tests/conformance/run-node.sh`)
}
const API = process.env.E2B_API_URL
const HEADERS = { 'X-API-Key': process.env.E2B_API_KEY }
const built = []
const scratch = []

after(async () => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true })
  for (const id of built) {
    await fetch(`${API}/templates/${id}`, { method: 'DELETE', headers: HEADERS })
  }
})

/** A directory of our own under the system's temporary one, removed after the tests. */
function scratchDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  scratch.push(dir)
  return dir
}

function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}

async function build(template, name, logs = []) {
  const info = await Template.build(template, name, {
    cpuCount: 1,
    memoryMB: 512,
    onBuildLogs: (entry) => logs.push(entry.message),
  })
  built.push(info.templateId)
  return info
}

test('a Dockerfile becomes a template whose sandboxes run its server', async () => {
  const context = scratchDir('hearth-js-template-')
  mkdirSync(join(context, 'site'))
  writeFileSync(join(context, 'site', 'index.html'), 'served by a template\n')
  const dockerfile = [
    'FROM e2bdev/base',
    'ENV SITE_NAME=hearth-js',
    'COPY site /home/user/site',
    'RUN echo "$SITE_NAME" > /home/user/site/name.txt',
    'USER root',
    'RUN touch /etc/built-by-dockerfile',
    'USER user',
    'WORKDIR /home/user/site',
  ].join('\n')
  const template = Template({ fileContextPath: context })
    .fromDockerfile(dockerfile)
    .setStartCmd('python3 -m http.server 8000', waitForPort(8000))
  const name = unique('js-dockerfile')
  const logs = []
  await build(template, name, logs)
  assert.ok(logs.some((m) => m.includes('COPY site /home/user/site')), logs.join('\n'))

  const sbx = await Sandbox.create(name, { timeoutMs: 120_000 })
  try {
    const run = async (cmd) => (await sbx.commands.run(cmd)).stdout.trim()
    assert.equal(await run('cat /home/user/site/index.html'), 'served by a template')
    assert.equal(await run('cat name.txt'), 'hearth-js')
    assert.equal(await run('echo $SITE_NAME'), 'hearth-js')
    assert.equal(await run('pwd'), '/home/user/site')
    assert.equal(await run('whoami'), 'user')
    assert.equal(await run('stat -c %U /etc/built-by-dockerfile'), 'root')
    const response = await fetch(`${API}/index.html`, {
      headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000' },
    })
    assert.equal(response.status, 200)
    assert.equal(await response.text(), 'served by a template\n')
  } finally {
    await sbx.kill()
  }
})

test('a failing step fails the build with its reason and its place', async () => {
  const template = Template()
    .fromTemplate('base')
    .runCmd('echo js-before')
    .runCmd('exit 5') // the failing step
  await assert.rejects(build(template, unique('js-failing')), (e) => {
    assert.ok(e instanceof BuildError, String(e))
    assert.match(e.message, /exited with code 5/)
    // reason.step points the SDK at the builder call of that step.
    assert.match(e.stack, /templates\.test\.mjs:\d+/, e.stack)
    const line = Number(e.stack.match(/templates\.test\.mjs:(\d+)/)[1])
    const source = readFileSync(new URL(import.meta.url), 'utf8').split('\n')
    assert.match(source[line - 1], /the failing step/)
    return true
  })
})

test('an image from a registry that wants a login, built twice: the second from the cache', async () => {
  const registry = process.env.HEARTH_TEST_LOGIN_REGISTRY
  assert.ok(registry, 'HEARTH_TEST_LOGIN_REGISTRY is not set: run tests/conformance/run-node.sh')
  const username = process.env.HEARTH_TEST_REGISTRY_USER
  const password = process.env.HEARTH_TEST_REGISTRY_PASSWORD
  // busybox as /bin/sh and nothing else: no user, no envd.
  const root = scratchDir('hearth-js-rootfs-')
  for (const dir of ['bin', 'etc', 'tmp', 'root']) mkdirSync(join(root, dir))
  writeFileSync(join(root, 'bin', 'busybox'), readFileSync('/bin/busybox'), { mode: 0o755 })
  symlinkSync('busybox', join(root, 'bin', 'sh'))
  for (const applet of ['cat', 'echo', 'id', 'whoami', 'ls']) symlinkSync('busybox', join(root, 'bin', applet))
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n')
  writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\n')
  execFileSync(process.env.PUSH_IMAGE_BIN, [
    '--registry', registry, '--name', 'hearth-test/js-private:1', '--rootfs', root,
    '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    '--username', username, '--password', password,
  ])
  const image = `${registry}/hearth-test/js-private:1`
  // The step cache outlives a node's database: a nonce keeps this run's first build uncached.
  const nonce = randomUUID().slice(0, 8)
  const define = () => Template().fromImage(image, { username, password }).runCmd(`echo from-js-${nonce} > /tmp/made`)
  const first = []
  const name = unique('js-image')
  await build(define(), name, first)
  assert.ok(!first.some((m) => m.startsWith('CACHED')), first.join('\n'))
  const sbx = await Sandbox.create(name, { timeoutMs: 60_000 })
  try {
    assert.equal((await sbx.commands.run('cat /tmp/made')).stdout.trim(), `from-js-${nonce}`)
    assert.equal((await sbx.commands.run('whoami')).stdout.trim(), 'user')
  } finally {
    await sbx.kill()
  }
  const second = []
  await build(define(), unique('js-image-again'), second)
  assert.ok(second.includes(`CACHED [1] RUN echo from-js-${nonce} > /tmp/made`), second.join('\n'))
  assert.ok(!second.includes('booting the build VM'), second.join('\n'))
  // A wrong password: the build fails naming the registry, not the password.
  await assert.rejects(
    build(Template().fromImage(image, { username, password: `not-${password}` }).runCmd('true'), unique('js-login')),
    (e) => {
      assert.ok(e instanceof BuildError, String(e))
      assert.ok(e.message.includes(registry) && e.message.includes('credentials'), e.message)
      assert.ok(!e.message.includes(password))
      return true
    },
  )
})
