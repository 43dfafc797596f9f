// Sends a known set of events with PostHog's browser SDK (posthog-js from npm) running in Debian's
// headless Chromium, driven by playwright-core (which never downloads a browser).
//
//     node posthog_js.mjs CAPTURE_URL TOKEN RUN_ID REPORT_FILE
//
// A local HTTP server on 127.0.0.1 serves a page that loads posthog-js's array.full.js from
// node_modules; the page then initialises posthog-js against CAPTURE_URL (a different origin, so
// CORS is exercised as in production) and captures events. Every request the page makes to
// CAPTURE_URL is recorded with its decoded payload into REPORT_FILE. Exits non-zero if the page
// errors, an event is not delivered with a 200 in time, or any request to capture fails.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { eventsOf, recordRequest, requestErrors } from './record.mjs'

const [CAPTURE, TOKEN, RUN, OUT] = process.argv.slice(2)
if (!OUT) {
    console.error('usage: node posthog_js.mjs CAPTURE_URL TOKEN RUN_ID REPORT_FILE')
    process.exit(2)
}
const CHROMIUM = process.env.HOGSTREAM_CHROMIUM ?? '/usr/bin/chromium'
const DELIVERY_TIMEOUT_MS = 30_000
const here = (p) => new URL(p, import.meta.url)
const version = JSON.parse(readFileSync(here('./node_modules/posthog-js/package.json'), 'utf8')).version
const sdkSource = readFileSync(here('./node_modules/posthog-js/dist/array.full.js'))

const errors = []
const records = []
const pending = new Set()

// The page and the SDK, from 127.0.0.1 only.
const page_html = `<!doctype html>
<html><head><meta charset="utf-8"><title>hogstream posthog-js test</title>
<script src="/posthog.js"></script></head>
<body><h1>hogstream posthog-js test</h1></body></html>`
const server = createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page_html)
    } else if (req.url === '/favicon.ico') {
        res.writeHead(204).end()
    } else if (req.url === '/posthog.js') {
        res.writeHead(200, { 'content-type': 'application/javascript' }).end(sdkSource)
    } else {
        res.writeHead(404).end()
    }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const pageUrl = `http://127.0.0.1:${server.address().port}/?run=${encodeURIComponent(RUN)}`

const userDataDir = mkdtempSync(join(tmpdir(), 'hogstream-chromium-'))
let context
try {
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        chromiumSandbox: false,
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
        ],
        timeout: 60_000,
    })
} catch (err) {
    console.error(`cannot start ${CHROMIUM} (install it with scripts/install-sdks.sh): ${err}`)
    server.close()
    rmSync(userDataDir, { recursive: true, force: true })
    process.exit(1)
}

try {
    const page = context.pages()[0] ?? (await context.newPage())
    page.on('pageerror', (err) => errors.push(`page error: ${err}`))
    page.on('console', (msg) => {
        if (msg.type() === 'error') errors.push(`console error: ${msg.text()}`)
    })
    context.on('request', (req) => {
        if (!req.url().startsWith(CAPTURE)) return
        const record = recordRequest({ method: req.method(), url: req.url(), headers: req.headers(), body: req.postDataBuffer() })
        record.resource_type = req.resourceType()
        records.push(record)
        const done = (async () => {
            const res = await req.response()
            if (res) {
                record.status = res.status()
                record.response = (await res.text().catch(() => '')).slice(0, 500)
                record.response_headers = await res.allHeaders()
            }
        })().catch((err) => (record.error = String(err)))
        pending.add(done)
        done.finally(() => pending.delete(done))
    })
    context.on('requestfailed', (req) => {
        if (req.url().startsWith(CAPTURE)) errors.push(`request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`)
    })

    await page.goto(pageUrl, { waitUntil: 'load' })
    const sent = await page.evaluate(
        async ({ capture, token, run }) => {
            const ph = window.posthog
            if (!ph || typeof ph.init !== 'function') throw new Error('posthog-js did not load')
            const options = {
                api_host: capture,
                persistence: 'memory',
                autocapture: false,
                capture_pageview: true,
                capture_pageleave: false,
                capture_performance: false,
                capture_heatmaps: false,
                capture_dead_clicks: false,
                capture_exceptions: false,
                disable_session_recording: true,
                disable_surveys: true,
                disable_external_dependency_loading: true,
                advanced_disable_flags: true,
                // Headless Chromium looks like a bot; PostHog's documented switch for tests.
                opt_out_useragent_filter: true,
            }
            await new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error('posthog.init never called loaded')), 10_000)
                ph.init(token, {
                    ...options,
                    bootstrap: { distinctID: `${run}-js-anon` },
                    loaded: () => {
                        clearTimeout(timer)
                        resolve()
                    },
                })
            })
            const uuid = (r) => r?.uuid ?? null
            const out = {}
            out.single = uuid(
                ph.capture('sdk js single', {
                    plan: 'pro',
                    count: 3,
                    price: 9.5,
                    flag: true,
                    nothing: null,
                    nested: { list: [1, 'two', null, false], deep: { x: 'y' } },
                    unicode: 'héllo ✓ 日本 🦔',
                    quote: 'a "quoted" \\ value',
                })
            )
            ph.identify(`${run}-js-user`, { email: `${run}@example.com` }, { first_seen_via: 'sdk-test' })
            ph.group('company', `${run}-acme`, { name: 'Acme', employees: 42 })
            ph.alias(`${run}-js-alias`)
            ph.setPersonProperties({ plan: 'enterprise' })
            out.batch = []
            for (let i = 0; i < 5; i++) out.batch.push(uuid(ph.capture('sdk js batch item', { i })))
            out.instant = uuid(ph.capture('sdk js instant', { instant: true }, { send_instantly: true }))
            // A second instance with compression off: a JSON body, so a cross-origin preflight.
            const plain = await new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error('the second posthog instance never called loaded')), 10_000)
                ph.init(
                    token,
                    {
                        ...options,
                        bootstrap: { distinctID: `${run}-js-plain` },
                        capture_pageview: false,
                        disable_compression: true,
                        loaded: (instance) => {
                            clearTimeout(timer)
                            resolve(instance)
                        },
                    },
                    'plain'
                )
            })
            out.plain = uuid(plain.capture('sdk js plain', { compressed: false, n: 1 }, { send_instantly: true }))
            out.plain_session_id = plain.get_session_id()
            out.distinct_id = ph.get_distinct_id()
            out.session_id = ph.get_session_id()
            return out
        },
        { capture: CAPTURE, token: TOKEN, run: RUN }
    )

    // Wait until every event the page produced has been delivered and answered.
    const expectedNames = ['$pageview', 'sdk js single', '$identify', '$groupidentify', '$create_alias', '$set', 'sdk js batch item', 'sdk js instant', 'sdk js plain']
    const wantUuids = [sent.single, ...sent.batch, sent.instant, sent.plain]
    const deadline = Date.now() + DELIVERY_TIMEOUT_MS
    const delivered = () => {
        const events = records.filter((r) => r.status === 200).flatMap((r) => eventsOf(r.payload))
        const names = new Set(events.map((e) => e.event))
        const uuids = new Set(events.map((e) => e.uuid))
        return expectedNames.every((n) => names.has(n)) && wantUuids.every((u) => uuids.has(u))
    }
    while (!delivered()) {
        if (Date.now() > deadline) {
            errors.push(`not every event was delivered within ${DELIVERY_TIMEOUT_MS} ms (records: ${records.length})`)
            break
        }
        await new Promise((r) => setTimeout(r, 100))
    }
    // Let anything still in flight finish so the report holds every request.
    await new Promise((r) => setTimeout(r, 500))
    await Promise.allSettled([...pending])
    for (const [k, v] of Object.entries({ single: sent.single, instant: sent.instant, plain: sent.plain })) if (!v) errors.push(`posthog.capture returned no uuid for ${k}`)

    errors.push(...requestErrors(records))
    const report = { sdk: 'posthog-js', version, browser: context.browser()?.version() ?? null, page: pageUrl, sent, requests: records, errors }
    writeFileSync(OUT, JSON.stringify(report, null, 1))
} catch (err) {
    errors.push(`driver: ${err?.stack ?? err}`)
    writeFileSync(OUT, JSON.stringify({ sdk: 'posthog-js', version, requests: records, errors }, null, 1))
} finally {
    await context.close().catch(() => {})
    server.close()
    rmSync(userDataDir, { recursive: true, force: true })
}
if (errors.length) {
    console.error(`posthog-js errors:\n  ${errors.join('\n  ')}`)
    process.exit(1)
}
console.log(`posthog-js ${version}: ${records.length} requests`)
