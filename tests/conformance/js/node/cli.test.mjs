// The `e2b` CLI (pinned in package.json) against a running `hearth up`, set up
// only by the sdk.env it writes: `e2b sandbox logs` shows the sandbox's own
// events (envd's process lines, the node's), pretty, as JSON and by level, also
// after the sandbox was killed; `e2b sandbox metrics` shows a series that grows
// and follows the guest's CPU. Run by tests/conformance/run-node.sh.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'

import { CommandExitError, Sandbox } from 'e2b'

const CLI = fileURLToPath(new URL('../node_modules/.bin/e2b', import.meta.url))

/** Runs the CLI; resolves with its stdout, rejects with its output when it fails. */
function e2b(...args) {
  return new Promise((resolve, reject) => {
    execFile(CLI, args, { env: { ...process.env, NO_COLOR: '1' }, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`e2b ${args.join(' ')} failed (${error.code}): ${stdout}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

/** `e2b sandbox logs --format json` as objects. */
async function jsonLogs(id, ...extra) {
  const out = await e2b('sandbox', 'logs', id, '--format', 'json', ...extra)
  return out
    .split('\n')
    .filter((line) => line.trim().startsWith('{'))
    .map((line) => JSON.parse(line))
}

/** The JSON logs once `found` holds for them (the guest's console drains at its own pace). */
async function logsUntil(id, found) {
  const deadline = Date.now() + 60_000
  for (;;) {
    const logs = await jsonLogs(id, '--level', 'DEBUG')
    if (found(logs)) return logs
    if (Date.now() > deadline) assert.fail(`the logs never showed what was expected: ${JSON.stringify(logs)}`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

test('e2b sandbox logs shows the process and node events, by level, after a kill too', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  const id = sbx.sandboxId
  try {
    assert.equal((await sbx.commands.run('echo hello-from-cli-test')).stdout, 'hello-from-cli-test\n')
    await assert.rejects(sbx.commands.run('exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3)
    await sbx.commands.run(`printf '\\033[31mred-console-line\\033[0m\\r\\n' > /dev/ttyS0`, { user: 'root' })

    const isEnd = (log, pid) => log.event_type === 'process_end' && log.pid === pid
    const logs = await logsUntil(id, (logs) => {
      const start = logs.find((l) => l.event_type === 'process_start' && String(l.command).includes('exit 3'))
      return start && logs.some((l) => isEnd(l, start.pid)) && logs.some((l) => l.logger === 'console')
    })
    const echo = logs.find((l) => l.event_type === 'process_start' && String(l.command).includes('hello-from-cli-test'))
    assert.ok(echo, 'the echo started')
    assert.equal(echo.logger, 'process')
    assert.equal(echo.level.trim().toUpperCase(), 'INFO')
    assert.equal(echo.message, `Process with pid ${echo.pid} started`)
    assert.ok(!Number.isNaN(Date.parse(echo.timestamp)))
    const exit3 = logs.find((l) => l.event_type === 'process_start' && String(l.command).includes('exit 3'))
    const end = logs.find((l) => isEnd(l, exit3.pid))
    assert.equal(end.exit_code, 3)
    assert.ok(logs.some((l) => l.logger === 'node' && l.message === 'Sandbox created'))
    // The console is a source of its own, without terminal escapes.
    assert.ok(logs.some((l) => l.logger === 'console' && l.message === 'red-console-line'), JSON.stringify(logs))
    assert.ok(logs.every((l) => !String(l.message).includes('\u001b')))

    // Pretty (the default) prints the same events.
    const pretty = await e2b('sandbox', 'logs', id)
    assert.match(pretty, new RegExp(`Logs for sandbox ${id}`))
    assert.match(pretty, /Process with pid \d+ started/)
    assert.match(pretty, /hello-from-cli-test/)

    // --level WARN hides the INFO events.
    const warnings = await jsonLogs(id, '--level', 'WARN')
    assert.ok(warnings.every((l) => ['WARN', 'ERROR'].includes(l.level.trim().toUpperCase())), JSON.stringify(warnings))
    assert.ok(!warnings.some((l) => l.event_type === 'process_start'))
    // --loggers keeps the named ones.
    const processOnly = await jsonLogs(id, '--loggers', 'process')
    assert.ok(processOnly.length >= 4 && processOnly.every((l) => l.logger === 'process'))
  } finally {
    await sbx.kill()
  }
  // Killed, its logs stay readable, the kill among them.
  const after = await logsUntil(id, (logs) => logs.some((l) => l.message === 'Sandbox killed'))
  assert.ok(after.some((l) => l.event_type === 'process_start'))
})

/** `e2b sandbox metrics --format json` as objects. */
async function jsonMetrics(id) {
  const out = await e2b('sandbox', 'metrics', id, '--format', 'json')
  return out
    .split('\n')
    .filter((line) => line.trim().startsWith('{'))
    .map((line) => JSON.parse(line))
}

test('e2b sandbox metrics shows a series that grows while a command burns CPU', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    const burner = await sbx.commands.run(
      "timeout 20 sh -c 'while :; do :; done' & timeout 20 sh -c 'while :; do :; done' & wait",
      { background: true },
    )
    const deadline = Date.now() + 60_000
    let first
    for (;;) {
      first = await jsonMetrics(sbx.sandboxId)
      if ((first.length >= 3 && first.some((m) => m.cpuUsedPct > 50)) || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    assert.ok(first.length >= 3, JSON.stringify(first))
    assert.ok(first.some((m) => m.cpuUsedPct > 50), JSON.stringify(first))
    assert.ok(first.every((m) => m.cpuCount === 2 && m.memTotal > 0 && !Number.isNaN(Date.parse(m.timestamp))))
    const stamps = first.map((m) => Date.parse(m.timestamp))
    assert.deepEqual(stamps, [...stamps].sort((a, b) => a - b))
    let later
    for (;;) {
      later = await jsonMetrics(sbx.sandboxId)
      if (later.length > first.length || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    assert.ok(later.length > first.length, `${later.length} after ${first.length}`)
    const pretty = await e2b('sandbox', 'metrics', sbx.sandboxId)
    assert.match(pretty, /CPU: +[\d.]+% \/ +2 Cores \| Memory: +\d+ \/ \d+ +MiB \| Disk: +\d+ \/ \d+ +MiB/)
    await burner.kill()
  } finally {
    await sbx.kill()
  }
})
