// Sends a known set of events with PostHog's Node SDK (posthog-node from npm) to a capture URL.
//
//     node posthog_node.mjs CAPTURE_URL TOKEN RUN_ID REPORT_FILE TIMED_UUID
//
// Every HTTP request the SDK makes goes through a recording `fetch` (posthog-node's `fetch`
// option) and is written to REPORT_FILE with its decoded payload. Exits non-zero if the SDK
// emits an error, a request fails, or any response is not 200.
import { writeFileSync, readFileSync } from 'node:fs'
import { PostHog } from 'posthog-node'
import { recordRequest, requestErrors } from './record.mjs'

const [URL_, TOKEN, RUN, OUT, TIMED_UUID] = process.argv.slice(2)
if (!TIMED_UUID) {
    console.error('usage: node posthog_node.mjs CAPTURE_URL TOKEN RUN_ID REPORT_FILE TIMED_UUID')
    process.exit(2)
}
const version = JSON.parse(readFileSync(new URL('./node_modules/posthog-node/package.json', import.meta.url), 'utf8')).version

const records = []
const errors = []

async function bodyBytes(body) {
    if (body == null) return Buffer.alloc(0)
    if (typeof body === 'string') return Buffer.from(body, 'utf8')
    if (body instanceof Blob) return Buffer.from(await body.arrayBuffer())
    if (body instanceof ArrayBuffer) return Buffer.from(body)
    if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength)
    throw new Error(`unexpected fetch body type ${Object.prototype.toString.call(body)}`)
}

async function recordingFetch(url, options = {}) {
    const headers = options.headers instanceof Headers ? Object.fromEntries(options.headers) : { ...(options.headers ?? {}) }
    const record = recordRequest({ method: options.method ?? 'GET', url: String(url), headers, body: await bodyBytes(options.body) })
    records.push(record)
    try {
        const res = await fetch(url, options)
        record.status = res.status
        record.response = (await res.clone().text()).slice(0, 500)
        return res
    } catch (err) {
        record.error = String(err)
        throw err
    }
}

function client(extra = {}) {
    const ph = new PostHog(TOKEN, {
        host: URL_,
        fetch: recordingFetch,
        flushAt: 100,
        flushInterval: 0,
        fetchRetryCount: 0,
        requestTimeout: 20000,
        ...extra,
    })
    ph.on('error', (err) => errors.push(`SDK error: ${err?.stack ?? err}`))
    return ph
}

const user = `${RUN}-node-user`
const groupKey = `${RUN}-acme`
const timedUuid = TIMED_UUID

async function send() {
    // 1. The default client: gzip-compressed /batch/ requests.
    const ph = client()
    ph.capture({
        distinctId: user,
        event: 'sdk node single',
        properties: {
            plan: 'pro',
            count: 3,
            price: 9.5,
            flag: true,
            nothing: null,
            nested: { list: [1, 'two', null, false], deep: { x: 'y' } },
            unicode: 'héllo ✓ 日本 🦔',
            quote: 'a "quoted" \\ value',
        },
    })
    ph.identify({ distinctId: user, properties: { email: `${RUN}@example.com`, $set_once: { first_seen_via: 'sdk-test' } } })
    ph.alias({ distinctId: user, alias: `${RUN}-node-alias` })
    ph.groupIdentify({ groupType: 'company', groupKey, properties: { name: 'Acme', employees: 42 }, distinctId: user })
    ph.capture({
        distinctId: user,
        event: 'sdk node timed',
        properties: { kind: 'explicit timestamp and uuid' },
        groups: { company: groupKey },
        timestamp: new Date(Date.now() - 90_000),
        uuid: timedUuid,
    })
    for (let i = 0; i < 5; i++) ph.capture({ distinctId: user, event: 'sdk node batch item', properties: { i } })
    await ph.flush()
    await ph.captureImmediate({ distinctId: user, event: 'sdk node immediate', properties: { immediate: true } })
    await ph.shutdown()

    // 2. disableCompression: plain JSON /batch/.
    const plain = client({ disableCompression: true })
    plain.capture({ distinctId: `${RUN}-node-plain`, event: 'sdk node plain', properties: { compressed: false, n: 1 } })
    await plain.shutdown()
}

try {
    await send()
} catch (err) {
    errors.push(`driver: ${err?.stack ?? err}`)
}
errors.push(...requestErrors(records))
const report = { sdk: 'posthog-node', version, sent: { timed_uuid: timedUuid }, requests: records, errors }
writeFileSync(OUT, JSON.stringify(report, null, 1))
if (errors.length) {
    console.error(`posthog-node errors:\n  ${errors.join('\n  ')}`)
    process.exit(1)
}
console.log(`posthog-node ${version}: ${records.length} requests`)
