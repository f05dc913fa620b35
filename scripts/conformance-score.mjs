// Scores a results file of the HTTP caching test suite with the suite's own rules
// (`test-engine/lib/results.mjs`, `determineTestResult`): a test whose `depends_on` tests did not
// pass is a dependency failure, and counts as failed.
//
// usage: node conformance-score.mjs SUITE_DIR RESULTS.json [--list]
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, resultsFile, flag] = process.argv.slice(2)
const load = async (p) => import(pathToFileURL(path.join(suiteDir, p)).href)
const suites = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const score = { required: [0, 0], optimal: [0, 0] }
const failing = []
for (const suite of suites) {
  for (const test of suite.tests) {
    const kind = test.kind === undefined ? 'required' : test.kind
    if (kind !== 'required' && kind !== 'optimal') continue
    if (results[test.id] === undefined) continue // not run in this profile (e.g. browser_only)
    score[kind][1]++
    const result = determineTestResult(suites, test.id, results)
    if (result === resultTypes.pass) {
      score[kind][0]++
      continue
    }
    const r = results[test.id]
    let why = r === false ? 'failed' : Array.isArray(r) ? r.join(': ') : String(r)
    if (result === resultTypes.dependency_fail) {
      const deps = test.depends_on.filter(d => determineTestResult(suites, d, results) !== resultTypes.pass)
      why = 'dependency failed: ' + deps.join(', ')
    }
    failing.push(`${kind}\t${suite.id}\t${test.id}\t${why.replace(/\s+/g, ' ')}`)
  }
}
console.log(`required ${score.required[0]}/${score.required[1]}`)
console.log(`optimal ${score.optimal[0]}/${score.optimal[1]}`)
if (flag === '--list') for (const line of failing) console.log(line)
