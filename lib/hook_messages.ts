/**
 * The objects hooks receive ({@link ProxyRequest}, {@link ProxyResponse},
 * {@link ConnectRequest}) and the normalisation of a hook's {@link Reply} into
 * an answer the proxy can write. Pure: no I/O.
 *
 * @module
 */
import { connectionTokens, type Field, stripHopByHop } from "./fields.ts";
import type { ConnectRequest, Destination, ProxyRequest, ProxyResponse, Reply } from "./hooks.ts";
import {
  type BodySource,
  bodyTooLarge,
  FieldsHeaders,
  findInvalidField,
  headersOf,
  MessageBody,
} from "./message_view.ts";
import type { BodyReader } from "./reader.ts";
import { REASON } from "./serialize.ts";

/** What hooks see of a request (see {@link ProxyRequest}). */
export class HookRequest implements ProxyRequest {
  readonly method: string;
  readonly destination: Destination;
  readonly fields: Field[];
  /** The body as hooks left it. */
  readonly body: MessageBody;
  readonly #target: string;
  readonly #authority: string;
  readonly #path: string;
  #url: URL | null = null;
  #urlHref = "";
  #headers: FieldsHeaders | null = null;

  /**
   * @param method The request method.
   * @param target The absolute-form target as received.
   * @param dest Where the proxy would connect (copied: hooks may change it).
   * @param path The origin-form target the proxy would send.
   */
  constructor(
    method: string,
    target: string,
    dest: { hostname: string; port: number; authority: string; path: string },
    fields: Field[],
    body: BodyReader,
  ) {
    this.method = method;
    this.#target = target;
    this.#authority = dest.authority;
    this.#path = dest.path;
    this.destination = { hostname: dest.hostname, port: dest.port };
    this.fields = fields;
    this.body = new MessageBody(body, { tooLarge: bodyTooLarge("request") });
  }

  /** The absolute target as a URL (made on first use). */
  get url(): URL {
    if (this.#url === null) {
      let url: URL;
      try {
        url = new URL(this.#target);
      } catch {
        // The proxy's grammar and the URL standard differ at the edges: rebuild it from the parts.
        url = new URL(`http://${this.#authority}${this.#path === "*" ? "" : this.#path}`);
      }
      this.#url = url;
      this.#urlHref = url.href;
    }
    return this.#url;
  }

  /** A live view of {@link HookRequest.fields} (made on first use). */
  get headers(): Headers {
    return this.#headers ??= new FieldsHeaders(this.fields);
  }

  /** The origin-form target to send: the original, or the hook's edited URL path and query. */
  get path(): string {
    if (this.#url === null || this.#url.href === this.#urlHref) return this.#path;
    return `${this.#url.pathname}${this.#url.search}`;
  }

  text(maxBytes?: number): Promise<string> {
    return this.body.text(maxBytes);
  }
  bytes(maxBytes?: number): Promise<Uint8Array> {
    return this.body.bytes(maxBytes);
  }
  setBody(body: string | Uint8Array | ReadableStream<Uint8Array> | null): void {
    this.body.setBody(body);
  }
  pipeThrough(transform: TransformStream<Uint8Array, Uint8Array>): void {
    this.body.pipeThrough(transform);
  }
}

/** What hooks see of a response head (see {@link ProxyResponse}). */
export class HookResponse implements ProxyResponse {
  status: number;
  reason: string;
  readonly fields: Field[];
  /** The body as hooks left it. */
  readonly body: MessageBody;
  #headers: FieldsHeaders | null = null;

  /**
   * `method` is the request's (a response to HEAD has no body); `initial` is the
   * body of an answer the proxy makes itself (instead of `body` from the wire).
   */
  constructor(
    status: number,
    reason: string,
    fields: Field[],
    body: BodyReader,
    method: string,
    initial?: Exclude<BodySource, { kind: "wire" }>,
  ) {
    this.status = status;
    this.reason = reason;
    this.fields = fields;
    this.body = new MessageBody(body, {
      tooLarge: bodyTooLarge("response"),
      initial,
      noBody: () =>
        method === "HEAD" || this.status === 204 || this.status === 304
          ? "A response to HEAD or with status 204 or 304 has no body"
          : null,
    });
  }

  /** A live view of {@link HookResponse.fields} (made on first use). */
  get headers(): Headers {
    return this.#headers ??= new FieldsHeaders(this.fields);
  }

  text(maxBytes?: number): Promise<string> {
    return this.body.text(maxBytes);
  }
  bytes(maxBytes?: number): Promise<Uint8Array> {
    return this.body.bytes(maxBytes);
  }
  setBody(body: string | Uint8Array | ReadableStream<Uint8Array> | null): void {
    this.body.setBody(body);
  }
  pipeThrough(transform: TransformStream<Uint8Array, Uint8Array>): void {
    this.body.pipeThrough(transform);
  }
}

/** A CONNECT request for `onConnect`. */
export function connectRequest(hostname: string, port: number, fields: readonly Field[]): ConnectRequest {
  let headers: Headers | null = null;
  return {
    hostname,
    port,
    get headers() {
      return headers ??= headersOf(fields);
    },
  };
}

/** An answer the proxy writes itself, from a hook's {@link Reply} or a built-in policy. */
export interface Answer {
  status: number;
  reason: string;
  /** End-to-end fields (framing and hop-by-hop fields are added by the writer). */
  fields: Field[];
  /** `bytes` or `stream` (never `wire`). */
  body: Exclude<BodySource, { kind: "wire" }>;
}

const encoder = new TextEncoder();
const REASON_PHRASE = /^[\t \x21-\x7e\x80-\xff]*$/;

/**
 * Turns a hook's reply into an {@link Answer}: status 200-599, a valid reason,
 * valid fields (names kept as given when passed as pairs or a record), framing
 * and hop-by-hop fields removed (the proxy owns them).
 *
 * @returns null when the reply cannot be sent as given.
 */
export function normalizeReply(reply: Reply): Answer | null {
  if (reply instanceof Response) {
    const fields: Field[] = [];
    for (const pair of reply.headers) fields.push(pair);
    const reason = reply.statusText !== "" ? reply.statusText : REASON[reply.status] ?? "Unknown";
    if (!validStatus(reply.status) || !REASON_PHRASE.test(reason)) return null;
    return {
      status: reply.status,
      reason,
      fields: endToEnd(fields),
      body: reply.body === null ? { kind: "bytes", data: EMPTY } : { kind: "stream", stream: reply.body },
    };
  }
  if (reply === null || typeof reply !== "object") return null;
  const { status, reason, headers, body } = reply;
  if (!validStatus(status)) return null;
  const phrase = reason ?? REASON[status] ?? "Unknown";
  if (typeof phrase !== "string" || !REASON_PHRASE.test(phrase)) return null;
  const fields = fieldsOf(headers);
  if (fields === null) return null;
  let data: Uint8Array;
  if (body === undefined || body === null) data = EMPTY;
  else if (typeof body === "string") data = encoder.encode(body);
  else if (body instanceof Uint8Array) data = body;
  else return null;
  return { status, reason: phrase, fields: endToEnd(fields), body: { kind: "bytes", data } };
}

function validStatus(status: unknown): status is number {
  return typeof status === "number" && Number.isInteger(status) && status >= 200 && status <= 599;
}

/** Fields from a HeadersInit, case kept for pairs and records; null when one is invalid. */
function fieldsOf(init: HeadersInit | undefined): Field[] | null {
  if (init === undefined || init === null) return [];
  let fields: Field[];
  if (init instanceof Headers) fields = [...init];
  else if (Array.isArray(init)) fields = init.map((pair) => [pair[0], pair[1]] as Field);
  else if (typeof init === "object") fields = Object.entries(init as Record<string, string>);
  else return null;
  for (const f of fields) if (typeof f[1] === "string") f[1] = f[1].replace(/^[\t ]+|[\t ]+$/g, "");
  return findInvalidField(fields) === -1 ? fields : null;
}

/**
 * Drops framing and connection fields, and those the answer's `Connection`
 * names. `Proxy-Authenticate` stays: in an answer of the proxy's own it is the
 * proxy's challenge (RFC 9110 §11.7.1), not an origin's hop-by-hop field.
 */
function endToEnd(fields: Field[]): Field[] {
  return stripHopByHop(fields, connectionTokens(fields), KEEP_IN_ANSWERS);
}

const KEEP_IN_ANSWERS: ReadonlySet<string> = new Set(["proxy-authenticate"]);

const EMPTY = new Uint8Array(0);
