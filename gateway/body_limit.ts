/**
 * The request-body limit, as middleware. A declared `content-length` over the limit is refused
 * before anything is read; a body without one (chunked, or a POST with neither header) is read
 * while it is counted and refused as soon as it passes the limit.
 *
 * Hono's `bodyLimit` re-wraps such a request as `new Request(request, …)`, which reads the
 * original's `signal`: under `Deno.serve` that turns on the legacy "request.signal aborts on
 * success" warning on the first bodyless POST. The request rebuilt here copies what the routes
 * read (method, URL, headers, the counted body) and nothing else.
 */
import type { MiddlewareHandler } from "hono";

export function limitBody(maxBytes: number, refuse: () => never): MiddlewareHandler {
  return async (c, next) => {
    const request = c.req.raw;
    if (request.body === null) return await next();
    const declared = request.headers.get("content-length");
    if (declared !== null && !request.headers.has("transfer-encoding")) {
      if (Number(declared) > maxBytes) refuse();
      return await next();
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = request.body.getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      size += read.value.byteLength;
      if (size > maxBytes) {
        await reader.cancel();
        refuse();
      }
      chunks.push(read.value);
    }
    const body = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      body.set(chunk, offset);
      offset += chunk.byteLength;
    }
    c.req.raw = new Request(request.url, {
      method: request.method,
      headers: request.headers,
      body: size === 0 ? null : body,
    });
    await next();
  };
}
