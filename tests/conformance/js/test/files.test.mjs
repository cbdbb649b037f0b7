// Filesystem through the JS SDK: sandbox.files (/files upload/download + Filesystem RPCs).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { FileNotFoundError, FileType, NotFoundError } from 'e2b'

import { DEFAULT_USER, account, useSandbox } from './helpers.mjs'

let sbx
let tmp
let machine

useSandbox((ready) => ({ sbx, tmp, machine } = ready))

const readText = async (p) => (await machine.read(p)).toString('utf8')

const BINARY = new Uint8Array(256 * 16).map((_, i) => i % 256)

test('write a string and read it as text', async () => {
  const info = await sbx.files.write(`${tmp}/a.txt`, 'héllo')
  assert.equal(info.path, `${tmp}/a.txt`)
  assert.equal(info.name, 'a.txt')
  assert.equal(info.type, FileType.FILE)
  assert.equal(await readText(`${tmp}/a.txt`), 'héllo')
  assert.equal(await sbx.files.read(`${tmp}/a.txt`), 'héllo')
})

test('write ArrayBuffer, Blob and ReadableStream data; read bytes, blob and stream', async () => {
  await sbx.files.write(`${tmp}/ab.bin`, BINARY.buffer)
  await sbx.files.write(`${tmp}/blob.bin`, new Blob([BINARY]))
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(BINARY.slice(0, 1000))
      controller.enqueue(BINARY.slice(1000))
      controller.close()
    },
  })
  await sbx.files.write(`${tmp}/stream.bin`, stream)
  for (const name of ['ab.bin', 'blob.bin', 'stream.bin']) {
    assert.deepEqual(new Uint8Array(await machine.read(`${tmp}/${name}`)), BINARY, name)
  }
  assert.deepEqual(await sbx.files.read(`${tmp}/ab.bin`, { format: 'bytes' }), BINARY)
  const blob = await sbx.files.read(`${tmp}/ab.bin`, { format: 'blob' })
  assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), BINARY)
  const readable = await sbx.files.read(`${tmp}/ab.bin`, { format: 'stream' })
  const parts = []
  for await (const chunk of readable) parts.push(chunk)
  assert.deepEqual(new Uint8Array(Buffer.concat(parts)), BINARY)
})

test('gzip upload and download', async () => {
  const text = 'gzip ✓ '.repeat(500)
  await sbx.files.write(`${tmp}/gz.txt`, text, { gzip: true })
  assert.equal(await readText(`${tmp}/gz.txt`), text)
  assert.equal(await sbx.files.read(`${tmp}/gz.txt`, { gzip: true }), text)
})

test('write multiple files at once', async () => {
  const infos = await sbx.files.write([
    { path: `${tmp}/m/one.txt`, data: 'one' },
    { path: `${tmp}/m/sub/two.txt`, data: 'two' },
  ])
  assert.deepEqual(infos.map((i) => i.path).sort(), [`${tmp}/m/one.txt`, `${tmp}/m/sub/two.txt`])
  assert.equal(await readText(`${tmp}/m/sub/two.txt`), 'two')
})

test('reading a missing file throws FileNotFoundError', async () => {
  await assert.rejects(sbx.files.read(`${tmp}/missing.txt`), (err) => {
    assert.ok(err instanceof FileNotFoundError, `${err.name}: ${err.message}`)
    assert.ok(err instanceof NotFoundError)
    assert.equal(err.name, 'FileNotFoundError')
    return true
  })
  await assert.rejects(sbx.files.getInfo(`${tmp}/missing.txt`), FileNotFoundError)
  await assert.rejects(sbx.files.list(`${tmp}/missing-dir`), FileNotFoundError)
})

test('list with depth 1 and 2', async () => {
  const root = `${tmp}/tree`
  await machine.mkdir(`${root}/sub/deeper`)
  await machine.write(`${root}/a.txt`, 'aaaa')
  await machine.write(`${root}/sub/b.txt`, 'b')
  const one = await sbx.files.list(root)
  assert.deepEqual(
    one.map((e) => [e.name, e.type, e.path]).sort(),
    [
      ['a.txt', FileType.FILE, `${root}/a.txt`],
      ['sub', FileType.DIR, `${root}/sub`],
    ]
  )
  assert.equal(one.find((e) => e.name === 'a.txt').size, 4)
  const two = await sbx.files.list(root, { depth: 2 })
  assert.deepEqual(
    two.map((e) => e.path).sort(),
    [`${root}/a.txt`, `${root}/sub`, `${root}/sub/b.txt`, `${root}/sub/deeper`]
  )
})

test('exists and getInfo', async () => {
  await machine.write(`${tmp}/info.txt`, '12345', { mode: 0o640 })
  assert.equal(await sbx.files.exists(`${tmp}/info.txt`), true)
  assert.equal(await sbx.files.exists(`${tmp}/nope`), false)
  const info = await sbx.files.getInfo(`${tmp}/info.txt`)
  assert.equal(info.name, 'info.txt')
  assert.equal(info.type, FileType.FILE)
  assert.equal(info.size, 5)
  assert.equal(info.mode, 0o640)
  assert.equal(info.permissions, '-rw-r-----')
  // The test made the file as the default user.
  assert.equal(info.owner, DEFAULT_USER)
  assert.equal(info.group, DEFAULT_USER)
  assert.ok(info.modifiedTime instanceof Date)
  assert.ok(Math.abs(info.modifiedTime.getTime() - (await machine.stat(`${tmp}/info.txt`)).mtimeMs) < 1000)
})

test('makeDir, rename and remove', async () => {
  assert.equal(await sbx.files.makeDir(`${tmp}/d/e`), true)
  assert.equal(await sbx.files.makeDir(`${tmp}/d/e`), false)
  assert.ok(await machine.isDir(`${tmp}/d/e`))
  await machine.write(`${tmp}/d/old.txt`, 'x')
  const moved = await sbx.files.rename(`${tmp}/d/old.txt`, `${tmp}/d/new.txt`)
  assert.equal(moved.path, `${tmp}/d/new.txt`)
  assert.equal(moved.name, 'new.txt')
  assert.equal(await machine.exists(`${tmp}/d/old.txt`), false)
  await sbx.files.remove(`${tmp}/d`)
  assert.equal(await machine.exists(`${tmp}/d`), false)
})

test('files written as user "user" are owned by it', async () => {
  const user = account('user')
  const dir = await machine.mkdir(`${user.home}/hearth-conf-js-${process.pid}`, { owner: user })
  try {
    await sbx.files.write(`${dir}/n/u.txt`, 'mine', { user: 'user' })
    const st = await machine.stat(`${dir}/n/u.txt`)
    assert.deepEqual([st.uid, st.gid], [user.uid, user.gid])
    assert.equal((await machine.stat(`${dir}/n`)).uid, user.uid)
    const info = await sbx.files.getInfo(`${dir}/n/u.txt`, { user: 'user' })
    assert.equal(info.owner, 'user')
    assert.equal(await sbx.files.read(`${dir}/n/u.txt`, { user: 'user' }), 'mine')
  } finally {
    await machine.remove(dir)
  }
})
