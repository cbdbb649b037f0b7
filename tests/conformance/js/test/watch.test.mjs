// Directory watching through the JS SDK: the streaming Filesystem.WatchDir RPC.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { FilesystemEventType } from 'e2b'

import { useSandbox, waitFor } from './helpers.mjs'

let sbx
let tmp
let machine

useSandbox((ready) => ({ sbx, tmp, machine } = ready))

const seen = (events, name, type) => events.some((e) => e.name === name && e.type === type)
const describeEvents = (events) => JSON.stringify(events.map((e) => [e.name, e.type]))

test('watchDir streams create, write and remove events', async () => {
  const dir = `${tmp}/w`
  await machine.mkdir(dir)
  const events = []
  let exited = 0
  const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { onExit: () => exited++ })
  try {
    await sbx.files.write(`${dir}/f.txt`, 'data')
    await waitFor(
      () => seen(events, 'f.txt', FilesystemEventType.CREATE) && seen(events, 'f.txt', FilesystemEventType.WRITE),
      5000,
      `create/write not seen: ${describeEvents(events)}`
    )
    await sbx.files.remove(`${dir}/f.txt`)
    await waitFor(() => seen(events, 'f.txt', FilesystemEventType.REMOVE), 5000, 'remove not seen')
  } finally {
    await handle.stop()
  }
  await waitFor(() => exited === 1, 5000, 'onExit not called after stop')
})

test('recursive watchDir reports events in subdirectories', async () => {
  const dir = `${tmp}/r`
  await machine.mkdir(`${dir}/sub`)
  const events = []
  const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { recursive: true })
  try {
    await sbx.files.write(`${dir}/sub/g.txt`, 'g')
    await waitFor(
      () => seen(events, 'sub/g.txt', FilesystemEventType.CREATE),
      5000,
      `sub/g.txt create not seen: ${describeEvents(events)}`
    )
  } finally {
    await handle.stop()
  }
})

test('includeEntry attaches entry info', async () => {
  const dir = `${tmp}/e`
  await machine.mkdir(dir)
  const events = []
  const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { includeEntry: true })
  try {
    await sbx.files.write(`${dir}/x.txt`, 'x')
    await waitFor(() => seen(events, 'x.txt', FilesystemEventType.CREATE), 5000, 'create not seen')
    const created = events.find((e) => e.name === 'x.txt' && e.type === FilesystemEventType.CREATE)
    assert.ok(created.entry, 'entry missing')
    assert.equal(created.entry.path, `${dir}/x.txt`)
  } finally {
    await handle.stop()
  }
})
