// Filesystem through the JS SDK: sandbox.files (/files upload/download + Filesystem RPCs).
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { test } from 'node:test'

import { FileNotFoundError, FileType, NotFoundError } from 'e2b'

import { passwd, removeDir, useSandbox } from './helpers.mjs'

let sbx
let tmp

useSandbox((ready) => ({ sbx, tmp } = ready))

const BINARY = new Uint8Array(256 * 16).map((_, i) => i % 256)

test('write a string and read it as text', async () => {
  const info = await sbx.files.write(`${tmp}/a.txt`, 'héllo')
  assert.equal(info.path, `${tmp}/a.txt`)
  assert.equal(info.name, 'a.txt')
  assert.equal(info.type, FileType.FILE)
  assert.equal(fs.readFileSync(`${tmp}/a.txt`, 'utf8'), 'héllo')
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
    assert.deepEqual(new Uint8Array(fs.readFileSync(`${tmp}/${name}`)), BINARY, name)
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
  assert.equal(fs.readFileSync(`${tmp}/gz.txt`, 'utf8'), text)
  assert.equal(await sbx.files.read(`${tmp}/gz.txt`, { gzip: true }), text)
})

test('write multiple files at once', async () => {
  const infos = await sbx.files.write([
    { path: `${tmp}/m/one.txt`, data: 'one' },
    { path: `${tmp}/m/sub/two.txt`, data: 'two' },
  ])
  assert.deepEqual(infos.map((i) => i.path).sort(), [`${tmp}/m/one.txt`, `${tmp}/m/sub/two.txt`])
  assert.equal(fs.readFileSync(`${tmp}/m/sub/two.txt`, 'utf8'), 'two')
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
  fs.mkdirSync(`${root}/sub/deeper`, { recursive: true })
  fs.writeFileSync(`${root}/a.txt`, 'aaaa')
  fs.writeFileSync(`${root}/sub/b.txt`, 'b')
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
  fs.writeFileSync(`${tmp}/info.txt`, '12345')
  fs.chmodSync(`${tmp}/info.txt`, 0o640)
  assert.equal(await sbx.files.exists(`${tmp}/info.txt`), true)
  assert.equal(await sbx.files.exists(`${tmp}/nope`), false)
  const info = await sbx.files.getInfo(`${tmp}/info.txt`)
  assert.equal(info.name, 'info.txt')
  assert.equal(info.type, FileType.FILE)
  assert.equal(info.size, 5)
  assert.equal(info.mode, 0o640)
  assert.equal(info.permissions, '-rw-r-----')
  assert.equal(info.owner, 'root')
  assert.equal(info.group, 'root')
  assert.ok(info.modifiedTime instanceof Date)
  assert.ok(Math.abs(info.modifiedTime.getTime() - fs.statSync(`${tmp}/info.txt`).mtimeMs) < 1000)
})

test('makeDir, rename and remove', async () => {
  assert.equal(await sbx.files.makeDir(`${tmp}/d/e`), true)
  assert.equal(await sbx.files.makeDir(`${tmp}/d/e`), false)
  assert.ok(fs.statSync(`${tmp}/d/e`).isDirectory())
  fs.writeFileSync(`${tmp}/d/old.txt`, 'x')
  const moved = await sbx.files.rename(`${tmp}/d/old.txt`, `${tmp}/d/new.txt`)
  assert.equal(moved.path, `${tmp}/d/new.txt`)
  assert.equal(moved.name, 'new.txt')
  assert.equal(fs.existsSync(`${tmp}/d/old.txt`), false)
  await sbx.files.remove(`${tmp}/d`)
  assert.equal(fs.existsSync(`${tmp}/d`), false)
})

test('files written as user "user" are owned by it', async () => {
  const user = passwd('user')
  const dir = `${user.home}/hearth-conf-js-${process.pid}`
  fs.mkdirSync(dir)
  fs.chownSync(dir, user.uid, user.gid)
  try {
    await sbx.files.write(`${dir}/n/u.txt`, 'mine', { user: 'user' })
    const st = fs.statSync(`${dir}/n/u.txt`)
    assert.deepEqual([st.uid, st.gid], [user.uid, user.gid])
    assert.equal(fs.statSync(`${dir}/n`).uid, user.uid)
    const info = await sbx.files.getInfo(`${dir}/n/u.txt`, { user: 'user' })
    assert.equal(info.owner, 'user')
    assert.equal(await sbx.files.read(`${dir}/n/u.txt`, { user: 'user' }), 'mine')
  } finally {
    removeDir(dir)
  }
})
