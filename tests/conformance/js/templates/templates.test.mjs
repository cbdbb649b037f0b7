// Template builds through the unmodified E2B JS SDK against `hearth up`
// (real build VMs): a Dockerfile turned into steps by the SDK, defaults and
// the start command in the sandboxes, and a failing step. Run by
// tests/conformance/run-node.sh.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs'
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

after(async () => {
  for (const id of built) {
    await fetch(`${API}/templates/${id}`, { method: 'DELETE', headers: HEADERS })
  }
})

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
  const context = mkdtempSync(join(tmpdir(), 'hearth-js-template-'))
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

test('a failing step fails the build with its reason', async () => {
  const template = Template().fromTemplate('base').runCmd('echo js-before').runCmd('exit 5')
  await assert.rejects(build(template, unique('js-failing')), (e) => {
    assert.ok(e instanceof BuildError, String(e))
    assert.match(e.message, /exited with code 5/)
    return true
  })
})
