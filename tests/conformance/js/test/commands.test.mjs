// Process service through the JS SDK: sandbox.commands.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { CommandExitError, TimeoutError } from 'e2b'

import { DEFAULT_USER, connectAgain, passwd, useSandbox, waitFor } from './helpers.mjs'

let sbx
let tmp
let machine

useSandbox((ready) => ({ sbx, tmp, machine } = ready))

async function pids() {
  return new Set((await sbx.commands.list()).map((p) => p.pid))
}

test('run captures stdout, stderr and exit code', async () => {
  const r = await sbx.commands.run('echo hello; echo oops >&2')
  assert.equal(r.stdout, 'hello\n')
  assert.equal(r.stderr, 'oops\n')
  assert.equal(r.exitCode, 0)
})

test('envs and cwd', async () => {
  const r = await sbx.commands.run('echo "$HEARTH_JS"; pwd', { envs: { HEARTH_JS: 'v' }, cwd: tmp })
  assert.equal(r.stdout, `v\n${tmp}\n`)
})

test('the default user and user "user" run in their homes', async () => {
  // root for a debug-mode envd, `user` in a hearth VM (see helpers.DEFAULT_USER).
  const def = passwd(DEFAULT_USER)
  const user = passwd('user')
  let r = await sbx.commands.run('whoami; echo "$HOME"; pwd')
  assert.equal(r.stdout, `${DEFAULT_USER}\n${def.home}\n${def.home}\n`)
  r = await sbx.commands.run('whoami; echo "$HOME"; pwd; id -u', { user: 'user' })
  assert.equal(r.stdout, `user\n${user.home}\n${user.home}\n${user.uid}\n`)
})

test('non-zero exit throws CommandExitError', async () => {
  await assert.rejects(sbx.commands.run('echo out; echo err >&2; exit 3'), (err) => {
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.name, 'CommandExitError')
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'out\n')
    assert.equal(err.stderr, 'err\n')
    assert.equal(err.error, 'exit status 3')
    return true
  })
})

test('background command and wait', async () => {
  const h = await sbx.commands.run('sleep 0.3; echo done', { background: true })
  assert.ok(h.pid > 0)
  const r = await h.wait()
  assert.equal(r.stdout, 'done\n')
  assert.equal(h.exitCode, 0)
})

test('onStdout receives output while the command runs', async () => {
  const chunks = []
  const r = await sbx.commands.run('echo first; sleep 2; echo second', {
    onStdout: (s) => chunks.push([Date.now(), s]),
  })
  const finished = Date.now()
  assert.equal(r.stdout, 'first\nsecond\n')
  assert.equal(chunks[0][1], 'first\n')
  assert.ok(finished - chunks[0][0] >= 1500, 'first chunk arrived only at the end')
})

test('list shows a running command; kill ends it', async () => {
  const h = await sbx.commands.run('sleep 30', { background: true, envs: { HEARTH_MARK: 'js' } })
  const p = (await sbx.commands.list()).find((x) => x.pid === h.pid)
  assert.ok(p, 'process not listed')
  assert.equal(p.cmd, '/bin/bash')
  assert.deepEqual(p.args, ['-l', '-c', 'sleep 30'])
  assert.equal(p.envs.HEARTH_MARK, 'js')
  assert.equal(await sbx.commands.kill(h.pid), true)
  await assert.rejects(h.wait(), (err) => err instanceof CommandExitError && err.exitCode === -1)
  await waitFor(async () => !(await pids()).has(h.pid), 5000, 'killed process still listed')
  assert.equal(await sbx.commands.kill(h.pid), false)
})

test('kill of an unknown pid returns false', async () => {
  assert.equal(await sbx.commands.kill(999999), false)
})

test('sendStdin and closeStdin', async () => {
  const h = await sbx.commands.run('cat; echo eof', { background: true, stdin: true })
  await sbx.commands.sendStdin(h.pid, 'abc\n')
  await h.sendStdin(new TextEncoder().encode('def\n'))
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.stdout, 'abc\ndef\neof\n')
})

test('connect to a running command receives its later output', async () => {
  const h = await sbx.commands.run('sleep 2; echo later', { background: true })
  const other = await connectAgain(sbx)
  const got = []
  const h2 = await other.commands.connect(h.pid, { onStdout: (s) => got.push(s) })
  assert.equal(h2.pid, h.pid)
  const r = await h2.wait()
  assert.equal(r.stdout, 'later\n')
  assert.equal(got.join(''), 'later\n')
  assert.equal((await h.wait()).stdout, 'later\n')
})

test('a command survives disconnect and can be reconnected', async () => {
  const h = await sbx.commands.run('sleep 3; echo survived', { background: true })
  await h.disconnect()
  assert.ok((await pids()).has(h.pid))
  const h2 = await sbx.commands.connect(h.pid)
  assert.equal((await h2.wait()).stdout, 'survived\n')
})

test('timeoutMs ends the command with TimeoutError', async () => {
  const started = Date.now()
  await assert.rejects(sbx.commands.run('sleep 10', { timeoutMs: 2000 }), (err) => {
    assert.ok(err instanceof TimeoutError, `${err.name}: ${err.message}`)
    return true
  })
  assert.ok(Date.now() - started < 8000)
})

test('files written by a command are visible on the machine', async () => {
  await sbx.commands.run(`echo content > ${tmp}/from-cmd.txt`, { user: 'root' })
  assert.equal((await machine.read(`${tmp}/from-cmd.txt`)).toString('utf8'), 'content\n')
})
