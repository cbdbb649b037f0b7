// Shared setup for the JS conformance tests: an envd on localhost:49983 and the
// SDK in debug mode (no API calls; all sandbox traffic goes to localhost:49983).
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, before } from 'node:test'
import { fileURLToPath } from 'node:url'

import { Sandbox } from 'e2b'

export const ENVD_PORT = 49983
const HEALTH_URL = `http://127.0.0.1:${ENVD_PORT}/health`
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..')

async function healthStatus() {
  try {
    const r = await fetch(HEALTH_URL, { signal: AbortSignal.timeout(1000) })
    return r.status
  } catch {
    return undefined
  }
}

/**
 * Make sure an envd answers on port 49983. When run.sh already started one it is
 * reused; otherwise the binary named by ENVD_BIN (default <repo>/target/debug/envd)
 * is started and returned so that `stopEnvd` can stop it.
 */
export async function ensureEnvd() {
  if ((await healthStatus()) === 204) return undefined
  const bin = process.env.ENVD_BIN || path.join(REPO_ROOT, 'target/debug/envd')
  if (!fs.existsSync(bin)) throw new Error(`envd binary not found: ${bin} (set ENVD_BIN)`)
  const log = fs.openSync(path.join(os.tmpdir(), 'hearth-conf-js-envd.log'), 'w')
  const child = spawn(bin, ['--port', String(ENVD_PORT)], { stdio: ['ignore', log, log] })
  fs.closeSync(log)
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`envd exited with code ${child.exitCode}`)
    if ((await healthStatus()) === 204) return child
    await sleep(100)
  }
  child.kill('SIGKILL')
  throw new Error('envd did not answer GET /health with 204 within 20s')
}

export async function stopEnvd(child) {
  if (!child || child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function waitFor(predicate, timeoutMs = 5000, message = 'condition not met') {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`${message} (waited ${timeoutMs} ms)`)
    await sleep(50)
  }
}

export function createSandbox() {
  return Sandbox.create({ debug: true })
}

/** A fresh root-owned directory under /tmp; remove it with `removeDir`. */
export function makeTmpDir() {
  const dir = `/tmp/hearth-conf-js-${randomUUID().slice(0, 12)}`
  fs.mkdirSync(dir, { mode: 0o755 })
  return dir
}

export function removeDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true })
}

/** The /etc/passwd entry of `name`: { uid, gid, home }. */
export function passwd(name) {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`))
  if (!line) throw new Error(`no account ${name}; run tests/conformance/run.sh first`)
  const f = line.split(':')
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] }
}

/**
 * Registers the hooks every test file needs: an envd on the debug port, a
 * debug-mode sandbox and (unless `scratch` is false) a scratch directory, all
 * cleaned up after the file's tests. `onReady` gets `{ sbx, tmp }` first.
 */
export function useSandbox(onReady, { scratch = true } = {}) {
  let envd
  let tmp
  before(async () => {
    envd = await ensureEnvd()
    tmp = scratch ? makeTmpDir() : undefined
    onReady({ sbx: await createSandbox(), tmp })
  })
  after(async () => {
    if (tmp) removeDir(tmp)
    await stopEnvd(envd)
  })
}
