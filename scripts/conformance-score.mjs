// Scores a results file of the HTTP caching test suite (npm `http-cache-tests`), honouring each
// test's `depends_on` the way the suite's own display does: a test whose dependency did not pass
// does not count as passed.
//
// usage: node conformance-score.mjs SUITE_DIR RESULTS.json [--list]
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, resultsFile, flag] = process.argv.slice(2)
const load = async (p) => (await import(pathToFileURL(path.join(suiteDir, p)).href)).default
const suites = await load('tests/index.mjs')
suites.push(await load('tests/surrogate-control.mjs'))
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const tests = new Map()
for (const suite of suites) {
  for (const test of suite.tests) tests.set(test.id, { ...test, suite: suite.name })
}

const memo = new Map()
function passed (id) {
  if (memo.has(id)) return memo.get(id)
  const test = tests.get(id)
  let ok = results[id] === true
  if (ok && test && test.depends_on) ok = test.depends_on.every(passed)
  memo.set(id, ok)
  return ok
}

const score = { required: [0, 0], optimal: [0, 0] }
const failing = []
for (const [id, test] of tests) {
  const kind = test.kind === undefined ? 'required' : test.kind
  if (kind !== 'required' && kind !== 'optimal') continue
  if (results[id] === undefined) continue // not run (e.g. browser-only)
  score[kind][1]++
  if (passed(id)) {
    score[kind][0]++
  } else {
    const r = results[id]
    const why = r === false ? 'failed' : Array.isArray(r) ? r.join(': ') : String(r)
    const dep = r === true ? 'dependency failed: ' + test.depends_on.filter(d => !passed(d)).join(', ') : why
    failing.push(`${kind}\t${test.suite}\t${id}\t${dep}`)
  }
}
console.log(`required ${score.required[0]}/${score.required[1]}`)
console.log(`optimal ${score.optimal[0]}/${score.optimal[1]}`)
if (flag === '--list') for (const line of failing) console.log(line)
