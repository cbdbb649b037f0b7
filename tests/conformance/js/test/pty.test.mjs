// PTY sessions through the JS SDK: sandbox.pty.
// Input is written so that its echo cannot match the expected output.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { CommandExitError } from 'e2b'

import { passwd, useSandbox, waitFor } from './helpers.mjs'

let sbx

useSandbox((ready) => ({ sbx } = ready), { scratch: false })

async function openPty(opts = {}) {
  const chunks = []
  const decoder = new TextDecoder()
  const handle = await sbx.pty.create({
    cols: 80,
    rows: 24,
    onData: (data) => chunks.push(decoder.decode(data, { stream: true })),
    ...opts,
  })
  const output = () => chunks.join('')
  const send = (text) => sbx.pty.sendInput(handle.pid, new TextEncoder().encode(text))
  const expect = (needle) =>
    waitFor(() => output().includes(needle), 10_000, `${JSON.stringify(needle)} not in PTY output`)
  return { handle, output, send, expect }
}

test('create, send input, resize and kill a PTY', async () => {
  const pty = await openPty()
  try {
    await pty.send('echo hearth-$((6*7))\n')
    await pty.expect('hearth-42')
    await pty.send('echo "sz1:$(stty size)"\n')
    await pty.expect('sz1:24 80')
    await sbx.pty.resize(pty.handle.pid, { cols: 100, rows: 40 })
    await pty.send('echo "sz2:$(stty size)"\n')
    await pty.expect('sz2:40 100')
  } finally {
    assert.equal(await sbx.pty.kill(pty.handle.pid), true)
  }
  await assert.rejects(pty.handle.wait(), (err) => err instanceof CommandExitError && err.exitCode === -1)
})

test('PTY as user "user" is a terminal with TERM set', async () => {
  const user = passwd('user')
  const pty = await openPty({ user: 'user', envs: { HEARTH_PTY: 'js' } })
  try {
    await pty.send('[ -t 0 ] && echo "who:$(whoami):$(pwd):$TERM:$HEARTH_PTY"\n')
    await pty.expect(`who:user:${user.home}:xterm-256color:js`)
  } finally {
    await sbx.pty.kill(pty.handle.pid)
  }
})

test('exit ends the PTY with exit code 0', async () => {
  const pty = await openPty()
  await pty.send('exit 0\n')
  const r = await pty.handle.wait()
  assert.equal(r.exitCode, 0)
})
