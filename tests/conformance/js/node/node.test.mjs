// The unmodified E2B JS SDK against a running `hearth up` (real VMs), set up
// only by the sdk.env it writes (E2B_API_URL, E2B_DOMAIN, E2B_API_KEY,
// NODE_EXTRA_CA_CERTS): sandboxes at https://<port>-<id>.<domain>. Run by
// tests/conformance/run-node.sh.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'

import { CommandExitError, Sandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_DOMAIN', 'E2B_API_KEY']) {
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
    // Sampled every second: the first sample comes soon after the create.
    let metrics = await sbx.getMetrics()
    for (const deadline = Date.now() + 10_000; metrics.length === 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      metrics = await sbx.getMetrics()
    }
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

test('envd and a server in the sandbox answer at https://<port>-<id>.<domain>', async () => {
  assert.equal(process.env.E2B_SANDBOX_URL, undefined)
  const sbx = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    const host = sbx.getHost(8000)
    assert.equal(host, `8000-${sbx.sandboxId}.${process.env.E2B_DOMAIN}`)
    await sbx.files.write('/tmp/www/index.html', 'served over https\n')
    await sbx.commands.run('cd /tmp/www && python3 -m http.server 8000', { background: true })
    // Node's fetch trusts hearth's CA through NODE_EXTRA_CA_CERTS.
    const deadline = Date.now() + 30_000
    let response
    do {
      response = await fetch(`https://${host}/index.html`)
      if (response.status !== 502) break
      await new Promise((resolve) => setTimeout(resolve, 200))
    } while (Date.now() < deadline)
    assert.equal(response.status, 200)
    assert.equal(await response.text(), 'served over https\n')
    const envd = await fetch(`https://${sbx.getHost(49983)}/health`)
    assert.equal(envd.status, 204)
  } finally {
    await sbx.kill()
  }
})

test('pause keeps processes and files; a connect resumes; a paused sandbox can be killed', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.commands.run('i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done', {
      background: true,
    })
    await sbx.files.write('/home/user/js-paused.txt', 'kept')
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const before = Number((await sbx.commands.run('cat /dev/shm/count')).stdout)
    assert.ok(before > 0)
    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
    assert.equal((await resumed.getInfo()).state, 'running')
    assert.equal(await resumed.files.read('/home/user/js-paused.txt'), 'kept')
    await new Promise((resolve) => setTimeout(resolve, 1000))
    assert.ok(Number((await resumed.commands.run('cat /dev/shm/count')).stdout) > before)
    assert.equal(await resumed.pause(), true)
  } finally {
    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
  }
  await assert.rejects(Sandbox.connect(sbx.sandboxId))
})

test('a snapshot starts independent sandboxes; a fork does it in one call; the source runs on', async () => {
  const source = await Sandbox.create({ timeoutMs: 180_000 })
  const started = []
  try {
    await source.files.write('/home/user/js-state.txt', 'before')
    const snapshot = await source.createSnapshot()
    assert.ok(snapshot.snapshotId)
    await source.files.write('/home/user/js-state.txt', 'source')
    const listed = await Sandbox.listSnapshots({ sandboxId: source.sandboxId }).nextItems()
    assert.deepEqual(listed.map((s) => s.snapshotId), [snapshot.snapshotId])
    const fromSnapshot = await Sandbox.create(snapshot.snapshotId, { timeoutMs: 120_000 })
    started.push(fromSnapshot)
    assert.equal(await fromSnapshot.files.read('/home/user/js-state.txt'), 'before')
    assert.equal(await Sandbox.deleteSnapshot(snapshot.snapshotId), true)
    assert.equal(await Sandbox.deleteSnapshot(snapshot.snapshotId), false)

    const forks = await source.fork({ count: 2, timeoutMs: 120_000 })
    assert.equal(forks.length, 2)
    for (const fork of forks) {
      assert.ok(fork instanceof Sandbox, String(fork))
      started.push(fork)
      assert.equal(await fork.files.read('/home/user/js-state.txt'), 'source')
    }
    await forks[0].files.write('/home/user/js-state.txt', 'fork')
    assert.equal(await forks[1].files.read('/home/user/js-state.txt'), 'source')
    assert.equal(await source.files.read('/home/user/js-state.txt'), 'source')
    assert.equal(await source.isRunning(), true)
  } finally {
    for (const sbx of started) await sbx.kill()
    await source.kill()
  }
})

test('traffic to a port resumes a paused sandbox created with autoResume', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
  try {
    assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: 'pause', autoResume: true })
    await sbx.commands.run('mkdir -p /tmp/www && echo js-after-resume > /tmp/www/index.html')
    await sbx.commands.run('cd /tmp/www && python3 -m http.server 8001', { background: true })
    const url = `https://${sbx.getHost(8001)}/`
    const deadline = Date.now() + 30_000
    while ((await fetch(url)).status !== 200) {
      assert.ok(Date.now() < deadline, 'the server never answered')
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    assert.equal(await sbx.pause(), true)
    const r = await fetch(url)
    assert.equal(r.status, 200)
    assert.equal(await r.text(), 'js-after-resume\n')
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
  } finally {
    await Sandbox.kill(sbx.sandboxId)
  }
})
