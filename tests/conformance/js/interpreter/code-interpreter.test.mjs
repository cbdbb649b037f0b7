// The code interpreter through the unmodified @e2b/code-interpreter SDK
// against `hearth up`: sandboxes of the code-interpreter-v1 template (which
// run-node.sh builds or finds cached) run code with state, output callbacks,
// results, errors, contexts, env vars and bash. Run by tests/conformance/run-node.sh.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'

for (const name of ['E2B_API_URL', 'E2B_DOMAIN', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run tests/conformance/run-node.sh`)
}

let sbx
before(async () => {
  sbx = await Sandbox.create({ timeoutMs: 600_000 })
})
after(async () => {
  await sbx?.kill()
})

test('state persists and output reaches the callbacks', async () => {
  const out = []
  const err = []
  await sbx.runCode('x = 41\nprint("js out")\nimport sys; print("js err", file=sys.stderr)', {
    onStdout: (m) => out.push(m.line),
    onStderr: (m) => err.push(m.line),
  })
  assert.deepEqual(out, ['js out\n'])
  assert.deepEqual(err, ['js err\n'])
  const execution = await sbx.runCode('x + 1')
  assert.equal(execution.text, '42')
  assert.equal(execution.results[0].isMainResult, true)
})

test('errors, displays and a figure', async () => {
  const failed = await sbx.runCode('[][1]')
  assert.equal(failed.error.name, 'IndexError')
  assert.match(failed.error.traceback, /IndexError/)
  const shown = await sbx.runCode(
    'from IPython.display import display, HTML\ndisplay(HTML("<i>i</i>"))\n' +
      'import matplotlib.pyplot as plt\nplt.bar(["a", "b"], [1, 2])\nplt.show()',
  )
  assert.equal(shown.error, undefined)
  assert.equal(shown.results.length, 2)
  assert.equal(shown.results[0].html, '<i>i</i>')
  assert.ok(shown.results[1].png.startsWith('iVBORw0KGgo'))
  assert.deepEqual(shown.results[1].extra, {})
})

test('contexts, env vars and bash', async () => {
  const context = await sbx.createCodeContext({ cwd: '/tmp' })
  assert.equal(context.cwd, '/tmp')
  await sbx.runCode('mine = 1', { context })
  assert.equal((await sbx.runCode('mine', { context })).text, '1')
  assert.equal((await sbx.runCode('mine')).error.name, 'NameError')
  const ids = (await sbx.listCodeContexts()).map((c) => c.id)
  assert.ok(ids.includes(context.id))
  await sbx.restartCodeContext(context)
  assert.equal((await sbx.runCode('mine', { context })).error.name, 'NameError')
  await sbx.removeCodeContext(context)
  assert.ok(!(await sbx.listCodeContexts()).map((c) => c.id).includes(context.id))

  const env = await sbx.runCode('import os; os.environ["JS_ONLY"]', { envs: { JS_ONLY: 'yes' } })
  assert.equal(env.text, 'yes')
  const bash = await sbx.runCode('echo $((6 * 7))', { language: 'bash' })
  assert.deepEqual(bash.logs.stdout, ['42\n'])
})

test('JavaScript and TypeScript run on Deno, with their own state', async () => {
  const out = []
  const first = await sbx.runCode("let a = 40;\nconsole.log('from deno');\na + 2", {
    language: 'js',
    onStdout: (m) => out.push(m.line),
  })
  assert.deepEqual(out, ['from deno\n'])
  assert.equal(first.text, '42')
  assert.equal((await sbx.runCode('a * 2', { language: 'javascript' })).text, '80')
  const typed = await sbx.runCode('const n: number = 5;\nn * 2', { language: 'ts' })
  assert.equal(typed.text, '10')
  const failed = await sbx.runCode("throw new RangeError('too far')", { language: 'js' })
  assert.equal(failed.error.name, 'RangeError')
  assert.equal(failed.error.value, 'too far')
  const env = await sbx.runCode("console.log(Deno.env.get('FOR_JS'))", {
    language: 'js',
    envs: { FOR_JS: 'only-now' },
  })
  assert.deepEqual(env.logs.stdout, ['only-now\n'])
})
