// The unmodified E2B JS SDK against a running `hearth up` (real VMs), set up
// only through E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY. Run by
// tests/conformance/run-node.sh.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'

import { CommandExitError, Sandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run tests/conformance/run-node.sh`)
}

test('create, run, files, info, kill', async () => {
  const tag = randomUUID()
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { tag }, envs: { FROM_JS: 'yes' } })
  try {
    const r = await sbx.commands.run('echo $FROM_JS; whoami')
    assert.equal(r.stdout, 'yes\nuser\n')
    await assert.rejects(sbx.commands.run('exit 7'), (e) => e instanceof CommandExitError && e.exitCode === 7)
    await sbx.files.write('/home/user/js.txt', 'from js')
    assert.equal(await sbx.files.read('/home/user/js.txt'), 'from js')
    const names = (await sbx.files.list('/home/user')).map((e) => e.name)
    assert.ok(names.includes('js.txt'))
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.templateId, 'base')
    assert.deepEqual(info.metadata, { tag })
    const listed = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])
    const metrics = await sbx.getMetrics()
    assert.ok(metrics.length >= 1 && metrics[0].memTotal > 0)
    await sbx.setTimeout(120_000)
    const connected = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await connected.commands.run('cat /home/user/js.txt')).stdout, 'from js')
  } finally {
    assert.equal(await sbx.kill(), true)
  }
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  assert.equal(await sbx.isRunning(), false)
})

test('background commands, stdin and PTY', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    const cat = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(cat.pid, 'piped\n')
    await sbx.commands.kill(cat.pid)
    const out = []
    const pty = await sbx.pty.create({ rows: 24, cols: 80, onData: (d) => out.push(Buffer.from(d)) })
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; exit\n'))
    await pty.wait()
    assert.match(Buffer.concat(out).toString(), /24 80/)
  } finally {
    await sbx.kill()
  }
})

test('a wrong API key is refused', async () => {
  await assert.rejects(Sandbox.create({ apiKey: 'e2b_' + '2'.repeat(40) }), (e) => e.name === 'AuthenticationError')
})
