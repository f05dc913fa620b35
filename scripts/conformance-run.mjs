// Runs every test of the HTTP caching test suite through a cache and prints the results as JSON,
// the same as the suite's own `npm run cli`, but with a choice of profile:
//   shared (default): the suite's CLI profile, a shared cache (browser_only tests skipped);
//   --browser: the suite's browser-cache profile (cdn_only and browser_skip tests skipped, no
//              `Pragma`/`Cache-Control` added to requests), for a private cache.
//
// usage: node conformance-run.mjs SUITE_DIR BASE_URL [--browser]
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, base, flag] = process.argv.slice(2)
const load = async (p) => import(pathToFileURL(path.join(suiteDir, p)).href)
const tests = (await load('tests/index.mjs')).default
const runner = await load('test-engine/client/runner.mjs')
await runner.runTests(tests, flag === '--browser', base)
console.log(JSON.stringify(runner.getResults(), null, 2))
