// Shared setup for the JS conformance tests, in one of two modes chosen by
// HEARTH_CONFORMANCE_TARGET:
//
// * `debug` (the default): an envd on localhost:49983 and the SDK in debug mode
//   (no API calls; all sandbox traffic goes to localhost:49983). envd works on
//   this machine's files, so the tests prepare and check them directly.
// * `node`: the SDK against `hearth up` (tests/conformance/run-node.sh), set up
//   by E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY. Every test gets its own VM,
//   killed after it; files in it are prepared and checked through its envd.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, afterEach, before, beforeEach } from 'node:test'
import { fileURLToPath } from 'node:url'

import { CommandExitError, Sandbox } from 'e2b'

export const TARGET = process.env.HEARTH_CONFORMANCE_TARGET || 'debug'
if (!['debug', 'node'].includes(TARGET)) {
  throw new Error(`HEARTH_CONFORMANCE_TARGET must be 'debug' or 'node', not '${TARGET}'`)
}
export const NODE = TARGET === 'node'
if (NODE) {
  for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
    if (!process.env[name]) throw new Error(`${name} is not set: run tests/conformance/run-node.sh`)
  }
  delete process.env.E2B_DEBUG
}

// A node-mode sandbox's lifetime: longer than any test; it is killed after it.
const SANDBOX_TIMEOUT_MS = 600_000

// The accounts of hearth's guest image (a Debian bookworm rootfs).
const GUEST_ACCOUNTS = {
  root: { uid: 0, gid: 0, home: '/root' },
  user: { uid: 1000, gid: 1000, home: '/home/user' },
}

// Whom envd runs a request as when it names no user: root for a debug-mode envd
// (never initialised), `user` in a hearth VM (hearth initialises envd with the
// template's user). Files the tests prepare are made as this user too.
export const DEFAULT_USER = NODE ? 'user' : 'root'

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
  return NODE ? Sandbox.create({ timeoutMs: SANDBOX_TIMEOUT_MS }) : Sandbox.create({ debug: true })
}

/** Another client of the same sandbox, as a second program would get it. */
export function connectAgain(sbx) {
  return Sandbox.connect(sbx.sandboxId, NODE ? {} : { debug: true })
}

/** The passwd entry of `name` on the machine envd works on: { uid, gid, home }. */
export function passwd(name) {
  if (NODE) {
    const entry = GUEST_ACCOUNTS[name]
    if (!entry) throw new Error(`no account ${name} in the guest image`)
    return entry
  }
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`))
  if (!line) throw new Error(`no account ${name}; run tests/conformance/run.sh first`)
  const f = line.split(':')
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] }
}

/** Debug mode: envd works on this machine's files (the tests run as root). */
class LocalMachine {
  async read(p) {
    return fs.readFileSync(p)
  }

  /** Writes a file, creating its parents. */
  async write(p, data, { mode } = {}) {
    fs.mkdirSync(path.dirname(p), { recursive: true })
    fs.writeFileSync(p, data)
    if (mode !== undefined) fs.chmodSync(p, mode)
  }

  /** Makes a directory and its parents; `owner` ({ uid, gid }) owns the last one. */
  async mkdir(p, { owner } = {}) {
    fs.mkdirSync(p, { recursive: true, mode: 0o755 })
    if (owner) fs.chownSync(p, owner.uid, owner.gid)
    return p
  }

  async exists(p) {
    return fs.existsSync(p)
  }

  async isDir(p) {
    return fs.existsSync(p) && fs.statSync(p).isDirectory()
  }

  async stat(p) {
    const st = fs.statSync(p)
    return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs }
  }

  async remove(p) {
    fs.rmSync(p, { recursive: true, force: true })
  }
}

const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`

/**
 * Node mode: LocalMachine's operations inside the VM behind `sbx`, through its
 * envd: commands (as root to look, as the owner to make things) and, for file
 * contents, `sbx.files.write`. Contents are read back with `base64`, so checks
 * of the Filesystem service do not rely on its own download path.
 */
class GuestMachine {
  constructor(sbx) {
    this.sbx = sbx
  }

  async run(argv, user = 'root') {
    const r = await this.sbx.commands.run(argv.map(shellQuote).join(' '), { user, timeoutMs: 60_000 })
    return r.stdout
  }

  async check(argv) {
    try {
      await this.run(argv)
      return true
    } catch (err) {
      if (err instanceof CommandExitError) return false
      throw err
    }
  }

  async read(p) {
    return Buffer.from(await this.run(['base64', '-w0', '--', p]), 'base64')
  }

  async write(p, data, { mode } = {}) {
    await this.sbx.files.write(p, data, { user: DEFAULT_USER })
    if (mode !== undefined) await this.run(['chmod', mode.toString(8), '--', p])
  }

  async mkdir(p, { owner } = {}) {
    await this.run(['mkdir', '-p', '--', p], owner ? owner.name : DEFAULT_USER)
    return p
  }

  async exists(p) {
    return this.check(['sh', '-c', 'test -e "$1" || test -L "$1"', 'sh', p])
  }

  async isDir(p) {
    return this.check(['test', '-d', p])
  }

  async stat(p) {
    const [uid, gid, mode, mtime] = (await this.run(['stat', '-c', '%u %g %a %Y', '--', p])).split(/\s+/)
    // %Y is whole seconds: enough for the tests' one-second tolerances.
    return { uid: Number(uid), gid: Number(gid), mode: parseInt(mode, 8), mtimeMs: Number(mtime) * 1000 }
  }

  async remove(p) {
    await this.run(['rm', '-rf', '--', p])
  }
}

/** An account as `mkdir`'s owner: { name, uid, gid }. */
export function account(name) {
  return { name, ...passwd(name) }
}

/**
 * Registers the hooks every test file needs and hands `onReady` a
 * `{ sbx, tmp, machine }` before the tests run: a sandbox, (unless `scratch` is
 * false) a fresh scratch directory under /tmp owned by the default user, and
 * the machine envd works on. Debug mode: one debug-mode sandbox and envd on the
 * debug port for the whole file. Node mode: a new VM for every test, killed
 * after it.
 */
export function useSandbox(onReady, { scratch = true } = {}) {
  if (NODE) {
    let sbx
    beforeEach(async () => {
      sbx = await createSandbox()
      const machine = new GuestMachine(sbx)
      const tmp = scratch ? await machine.mkdir(`/tmp/hearth-conf-js-${randomUUID().slice(0, 12)}`) : undefined
      onReady({ sbx, tmp, machine })
    })
    afterEach(async () => {
      if (sbx) await sbx.kill()
      sbx = undefined
    })
    return
  }
  let envd
  let tmp
  const machine = new LocalMachine()
  before(async () => {
    envd = await ensureEnvd()
    tmp = scratch ? await machine.mkdir(`/tmp/hearth-conf-js-${randomUUID().slice(0, 12)}`) : undefined
    onReady({ sbx: await createSandbox(), tmp, machine })
  })
  after(async () => {
    if (tmp) await machine.remove(tmp)
    await stopEnvd(envd)
  })
}
