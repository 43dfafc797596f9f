// Shared by the Node drivers: turns one HTTP request an SDK made into a report record, undoing
// the SDK's transport encoding (gzip, base64, urlencoded `data=` forms) so the test can compare
// the events it sent with what capture wrote to Kafka.
import { gunzipSync } from 'node:zlib'

/** Decodes a request body to its JSON payload. Returns { payload, encoding } or throws. */
export function decodeBody(body, { contentType = '', contentEncoding = '', query = '' } = {}) {
    const params = new URLSearchParams(query)
    let compression = (params.get('compression') || '').toLowerCase()
    let bytes = Buffer.from(body ?? [])
    const steps = []
    const form = contentType.toLowerCase().startsWith('application/x-www-form-urlencoded') || bytes.subarray(0, 5).toString() === 'data='
    if (form) {
        const fields = new URLSearchParams(bytes.toString('utf8'))
        if (fields.get('compression')) compression = fields.get('compression').toLowerCase()
        bytes = Buffer.from(fields.get('data') ?? '', 'utf8')
        steps.push('form')
    }
    if (compression === 'base64' || compression === 'b64') {
        bytes = Buffer.from(bytes.toString('utf8'), 'base64')
        steps.push('base64')
    }
    if (compression === 'gzip-js' || compression === 'gzip' || contentEncoding.toLowerCase() === 'gzip' || (bytes[0] === 0x1f && bytes[1] === 0x8b)) {
        bytes = gunzipSync(bytes)
        steps.push('gzip')
    } else if (compression && compression !== 'base64' && compression !== 'b64') {
        throw new Error(`compression ${compression} is not decoded by the test driver`)
    }
    return { payload: JSON.parse(bytes.toString('utf8')), encoding: steps.length ? steps.join('+') : 'none' }
}

/** A report record for one request. `headers` is a plain object; `body` a Buffer or string. */
export function recordRequest({ method, url, headers, body }) {
    const u = new URL(url)
    const lower = Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]))
    const raw = Buffer.from(body ?? [])
    const record = {
        method,
        path: u.pathname,
        query: u.search.replace(/^\?/, ''),
        headers: lower,
        body_prefix: raw.subarray(0, 48).toString('base64'),
    }
    if (method !== 'GET' && method !== 'OPTIONS' && raw.length > 0) {
        try {
            Object.assign(record, decodeBody(raw, { contentType: lower['content-type'], contentEncoding: lower['content-encoding'], query: record.query }))
        } catch (err) {
            record.decode_error = String(err)
        }
    }
    return record
}

/** Every event carried by a decoded payload, whatever its shape. */
export function eventsOf(payload) {
    if (Array.isArray(payload)) return payload
    if (payload && Array.isArray(payload.batch)) return payload.batch
    if (payload && typeof payload === 'object') return [payload]
    return []
}

/** Errors for every record that failed, was not decodable, or was not answered 200. */
export function requestErrors(records) {
    const errors = []
    for (const r of records) {
        if (r.status !== 200) errors.push(`${r.method} ${r.path}?${r.query} answered ${r.status ?? 'nothing'}: ${r.response ?? r.error ?? ''}`)
        if (r.decode_error) errors.push(`cannot decode the body of ${r.method} ${r.path}?${r.query}: ${r.decode_error}`)
    }
    return errors
}
