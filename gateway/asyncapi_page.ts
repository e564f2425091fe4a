/**
 * The WebSocket protocol's docs page (`/docs/asyncapi`), rendered on the server from the AsyncAPI
 * document: one static HTML page, no script, no package. (`@asyncapi/react-component` renders
 * the same document in the browser, but its package brings some 230 npm packages into every
 * install of the gateway, for one page; a page built from our own document needs none.)
 *
 * What it shows, in the document's terms: the introduction, the server and how to
 * authenticate, the channel's bindings, each operation with its messages and replies, each
 * message with its payload's fields and its examples, the close codes, the shared schemas.
 */

/** The parts of the AsyncAPI document the page reads. */
interface Doc {
  info: { title: string; version: string; description?: string };
  servers: Record<string, Server>;
  channels: Record<string, Channel>;
  operations: Record<string, Operation>;
  components: {
    messages: Record<string, MessageDoc>;
    schemas: Record<string, Schema>;
    securitySchemes?: Record<
      string,
      { type: string; name?: string; in?: string; description?: string }
    >;
  };
}
interface Server {
  host: string;
  protocol: string;
  description?: string;
  variables?: Record<string, { default?: string; description?: string }>;
}
interface Channel {
  address: string;
  title?: string;
  description?: string;
  bindings?: { ws?: { method?: string; query?: Schema; headers?: Schema } };
  "x-close-codes"?: { code: number; reason: string; description: string }[];
}
interface Ref {
  $ref: string;
}
interface Operation {
  action: "send" | "receive";
  title?: string;
  summary?: string;
  messages: Ref[];
  reply?: { messages: Ref[] };
}
interface MessageDoc {
  name: string;
  title?: string;
  summary?: string;
  description?: string;
  payload: Schema;
  examples?: { name?: string; summary?: string; payload: unknown }[];
}
interface Schema {
  $ref?: string;
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  maxLength?: number;
}

const escape = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Inline markdown: `code`, **bold**, *emphasis*, [links](/local). */
function inline(text: string): string {
  return escape(text)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/\*([^*]+)\*/g, "<em>$1</em>")
    .replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, '<a href="$2">$1</a>');
}

/** The markdown the document's descriptions use: headings, paragraphs, lists, tables. */
export function markdown(text: string): string {
  const html: string[] = [];
  const blocks = text.trim().split(/\n\s*\n/);
  for (const block of blocks) {
    const lines = block.split("\n");
    const heading = /^(#{1,6}) (.*)$/.exec(lines[0]);
    if (heading && lines.length === 1) {
      const level = Math.min(6, heading[1].length + 1);
      html.push(`<h${level}>${inline(heading[2])}</h${level}>`);
    } else if (lines.every((l) => l.trim().startsWith("|"))) {
      const cells = (l: string) => l.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const [head, , ...rows] = lines;
      html.push(
        `<table><thead><tr>${cells(head).map((c) => `<th>${inline(c)}</th>`).join("")}</tr>` +
          `</thead><tbody>${
            rows.map((r) => `<tr>${cells(r).map((c) => `<td>${inline(c)}</td>`).join("")}</tr>`)
              .join("")
          }</tbody></table>`,
      );
    } else if (/^(\d+\.|-) /.test(lines[0])) {
      const ordered = /^\d+\./.test(lines[0]);
      const items: string[] = [];
      for (const line of lines) {
        if (/^(\d+\.|-) /.test(line)) items.push(line.replace(/^(\d+\.|-) /, ""));
        else items[items.length - 1] += " " + line.trim();
      }
      const tag = ordered ? "ol" : "ul";
      html.push(`<${tag}>${items.map((i) => `<li>${inline(i)}</li>`).join("")}</${tag}>`);
    } else {
      html.push(`<p>${inline(lines.join(" "))}</p>`);
    }
  }
  return html.join("\n");
}

/** The last part of a `$ref`: `#/components/schemas/Mode` → `Mode`. */
const refName = (ref: string) => ref.slice(ref.lastIndexOf("/") + 1);

/** A schema in one line: `"pong"`, `integer`, `Mode`, `string | null`, `Message[]`. */
function typeOf(schema: Schema): string {
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return `<a href="#schema-${escape(name)}">${escape(name)}</a>`;
  }
  if (schema.const !== undefined) return `<code>${escape(JSON.stringify(schema.const))}</code>`;
  if (schema.enum) {
    return schema.enum.map((v) => `<code>${escape(JSON.stringify(v))}</code>`).join(" | ");
  }
  const union = schema.anyOf ?? schema.oneOf;
  if (union) return union.map(typeOf).join(" | ");
  // zod writes a referenced type with a default as `allOf: [{ $ref }]` beside the default.
  if (schema.allOf?.length === 1) return typeOf(schema.allOf[0]);
  if (schema.properties) {
    const required = new Set(schema.required ?? []);
    const names = Object.keys(schema.properties).map((n) => required.has(n) ? n : `${n}?`);
    return `<code>{ ${escape(names.join(", "))} }</code>`;
  }
  if (schema.type === "array" && schema.items) return `${typeOf(schema.items)}[]`;
  const types = Array.isArray(schema.type) ? schema.type : [schema.type ?? "any"];
  const limits: string[] = [];
  if (schema.maxLength !== undefined) limits.push(`≤ ${schema.maxLength} chars`);
  if (schema.minimum !== undefined && schema.minimum !== 0 && schema.minimum > -1e15) {
    limits.push(`≥ ${schema.minimum}`);
  }
  return escape(types.join(" | ")) +
    (limits.length > 0 ? ` <small>(${limits.join(", ")})</small>` : "");
}

/** The fields of an object schema as a table; any other schema as its one-line type. */
function fields(schema: Schema, doc: Doc): string {
  const resolved = schema.$ref ? doc.components.schemas[refName(schema.$ref)] ?? schema : schema;
  if (resolved.properties === undefined) return `<p>${typeOf(schema)}</p>`;
  const required = new Set(resolved.required ?? []);
  const rows = Object.entries(resolved.properties).map(([name, field]) =>
    `<tr><td><code>${escape(name)}</code>${
      required.has(name) ? "" : " <small>optional</small>"
    }</td>` +
    `<td>${typeOf(field)}${
      field.default !== undefined
        ? ` <small>default <code>${escape(JSON.stringify(field.default))}</code></small>`
        : ""
    }</td><td>${field.description ? inline(field.description) : ""}</td></tr>`
  );
  return `<table class="fields"><thead><tr><th>field</th><th>type</th><th></th></tr></thead>` +
    `<tbody>${rows.join("")}</tbody></table>`;
}

const json = (value: unknown) => `<pre>${escape(JSON.stringify(value, null, 2))}</pre>`;

function messageLink(ref: Ref): string {
  const name = refName(ref.$ref);
  return `<a class="message-link" href="#message-${escape(name)}">${escape(name)}</a>`;
}

/** Renders the page from the AsyncAPI document. */
export function renderAsyncApiPage(document: unknown): string {
  const doc = document as Doc;
  const { info, components } = doc;
  const servers = Object.entries(doc.servers).map(([name, server]) => {
    const host = Object.entries(server.variables ?? {}).reduce(
      (h, [key, variable]) => h.replace(`{${key}}`, variable.default ?? key),
      server.host,
    );
    return `<div class="card"><h3>${escape(name)}: <code>${escape(server.protocol)}://${
      escape(host)
    }</code></h3>${markdown(server.description ?? "")}</div>`;
  });
  const security = Object.entries(components.securitySchemes ?? {}).map(([name, scheme]) =>
    `<li><code>${escape(name)}</code> (${escape(scheme.type)}, ${escape(scheme.in ?? "")} ` +
    `<code>${escape(scheme.name ?? "")}</code>): ${inline(scheme.description ?? "")}</li>`
  );
  const channels = Object.entries(doc.channels).map(([name, channel]) => {
    const ws = channel.bindings?.ws;
    return `<div class="card" id="channel-${escape(name)}"><h3><code>${
      escape(ws?.method ?? "GET")
    } ${escape(channel.address)}</code> — ${escape(channel.title ?? name)}</h3>` +
      markdown(channel.description ?? "") +
      (ws?.query ? `<h4>Query</h4>${fields(ws.query, doc)}` : "") +
      (ws?.headers ? `<h4>Headers</h4>${fields(ws.headers, doc)}` : "") + `</div>`;
  });
  const operations = Object.entries(doc.operations).map(([id, op]) => {
    const kind = op.action === "receive" && op.reply ? "reply" : op.action;
    const label = op.action === "receive"
      ? (op.reply ? "FROM CLIENT ⇄" : "FROM CLIENT")
      : "TO CLIENT";
    return `<div class="card operation ${op.action}" id="operation-${kind}-${escape(id)}">` +
      `<h3><span class="badge">${label}</span> ${escape(op.title ?? id)}</h3>` +
      (op.summary ? `<p>${inline(op.summary)}</p>` : "") +
      `<p>Message: ${op.messages.map(messageLink).join(", ")}` +
      (op.reply ? `; reply: ${op.reply.messages.map(messageLink).join(" or ")}` : "") +
      `</p></div>`;
  });
  const messages = Object.entries(components.messages).map(([name, message]) =>
    `<div class="card message" id="message-${escape(name)}">` +
    `<h3><code>${escape(message.name ?? name)}</code>${
      message.summary ? ` — ${inline(message.summary)}` : ""
    }</h3>` +
    markdown(message.description ?? "") +
    `<h4>Payload</h4>${fields(message.payload, doc)}` +
    (message.examples ?? []).map((example) =>
      `<h4>Example${example.summary ? `: ${inline(example.summary)}` : ""}</h4>${
        json(example.payload)
      }`
    ).join("") +
    `</div>`
  );
  const closeCodes = Object.values(doc.channels).flatMap((c) => c["x-close-codes"] ?? []);
  const schemas = Object.entries(components.schemas).map(([name, schema]) =>
    `<div class="card" id="schema-${escape(name)}"><h3><code>${escape(name)}</code></h3>` +
    `${schema.description ? markdown(schema.description) : ""}${fields(schema, doc)}</div>`
  );
  const nav = [
    ["#operations", "Operations"],
    ["#messages", "Messages"],
    ["#close-codes", "Close codes"],
    ["#schemas", "Schemas"],
  ].map(([href, text]) => `<a href="${href}">${text}</a>`).join(" · ");

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(info.title)}</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<nav class="top"><a href="/docs">HTTP API (OpenAPI)</a> · <strong>WebSocket protocol (AsyncAPI)</strong> ·
<a href="/asyncapi.json">asyncapi.json</a> — ${nav}</nav>
<main id="asyncapi">
<h1>${escape(info.title)} <span class="version">${escape(info.version)}</span></h1>
<section class="intro">${markdown(info.description ?? "")}</section>
<h2 id="servers">Server</h2>${servers.join("")}
${security.length > 0 ? `<h3>Authentication</h3><ul>${security.join("")}</ul>` : ""}
<h2 id="channels">Channel</h2>${channels.join("")}
<h2 id="operations">Operations</h2>${operations.join("")}
<h2 id="messages">Messages</h2>${messages.join("")}
<h2 id="close-codes">Close codes</h2>
<table><thead><tr><th>code</th><th>reason</th><th>meaning</th></tr></thead><tbody>${
    closeCodes.map((c) =>
      `<tr><td>${c.code}</td><td><code>${escape(c.reason)}</code></td><td>${
        inline(c.description)
      }</td></tr>`
    ).join("")
  }</tbody></table>
<h2 id="schemas">Schemas</h2>${schemas.join("")}
</main>
</body>
</html>`;
}

const STYLE = `
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
nav.top { position: sticky; top: 0; background: #fff; padding: 8px 24px; border-bottom: 1px solid #d0d7de; }
main { max-width: 1000px; margin: 0 auto; padding: 8px 24px 64px; }
h1 .version { font-size: 14px; background: #6e7781; color: #fff; border-radius: 10px; padding: 2px 8px; vertical-align: middle; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 40px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 16px 12px; margin: 12px 0; }
.operation.receive { border-left: 4px solid #1f883d; }
.operation.send { border-left: 4px solid #0969da; }
.badge { font-size: 12px; font-weight: 600; color: #fff; background: #1f883d; border-radius: 4px; padding: 2px 6px; white-space: nowrap; }
.operation.send .badge { background: #0969da; }
table { border-collapse: collapse; margin: 8px 0; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code { font: 13px ui-monospace, monospace; background: #eff1f3; border-radius: 4px; padding: 1px 4px; }
pre { font: 13px ui-monospace, monospace; background: #0d1117; color: #e6edf3; padding: 12px; border-radius: 6px; overflow-x: auto; }
small { color: #59636e; }
a { color: #0969da; }
`;
