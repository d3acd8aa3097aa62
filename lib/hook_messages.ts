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

/**
 * What request and response views share: a body made on first use (a hook that
 * never touches the body costs no body object), and a record of whether the
 * fields were touched in a way that needs the full check before sending.
 */
abstract class HookMessage {
  #body: MessageBody | null = null;
  #sealed: string | null = null;
  readonly #fields: Field[];
  #fieldsTouched = false;
  #headers: FieldsHeaders | null = null;

  constructor(fields: Field[]) {
    this.#fields = fields;
  }

  protected abstract makeBody(): MessageBody;

  /** The body as hooks left it (made on first use). */
  get body(): MessageBody {
    if (this.#body === null) {
      this.#body = this.makeBody();
      if (this.#sealed !== null) this.#body.seal(this.#sealed);
    }
    return this.#body;
  }

  /** Whether a hook read, replaced or transformed the body. */
  get bodyModified(): boolean {
    return this.#body !== null && this.#body.modified;
  }

  /** After this, body methods fail with `why`. */
  seal(why: string): void {
    this.#sealed = why;
    this.#body?.seal(why);
  }

  /** The fields as `[name, value]` pairs, in wire order and case (touching them means a full check). */
  get fields(): Field[] {
    this.#fieldsTouched = true;
    return this.#fields;
  }

  /** A live view of the fields (made on first use). */
  get headers(): Headers {
    return this.#headers ??= new FieldsHeaders(this.#fields);
  }

  /** The fields without marking them touched (for the proxy's own reading). */
  get currentFields(): Field[] {
    return this.#fields;
  }

  /**
   * Whether the fields may hold something the proxy must check or remove: the
   * array was handed out, or a managed field (hop-by-hop, framing, Host) was edited.
   */
  get fieldsNeedCheck(): boolean {
    return this.#fieldsTouched || (this.#headers !== null && this.#headers.managedEdited);
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

/** What hooks see of a request (see {@link ProxyRequest}). */
export class HookRequest extends HookMessage implements ProxyRequest {
  readonly method: string;
  readonly destination: Destination;
  readonly #target: string;
  readonly #authority: string;
  readonly #path: string;
  readonly #wire: () => BodyReader;
  readonly #beforeRead: (() => Promise<void>) | undefined;
  #url: URL | null = null;
  #urlHref = "";

  /**
   * @param method The request method.
   * @param target The absolute-form target as received.
   * @param dest Where the proxy would connect (copied: hooks may change it) and the origin-form path.
   * @param wire Makes the reader of the client's body (called when a hook first uses the body).
   */
  constructor(
    method: string,
    target: string,
    dest: { hostname: string; port: number; authority: string; path: string },
    fields: Field[],
    wire: () => BodyReader,
    beforeRead?: () => Promise<void>,
  ) {
    super(fields);
    this.#beforeRead = beforeRead;
    this.method = method;
    this.#target = target;
    this.#authority = dest.authority;
    this.#path = dest.path;
    this.#wire = wire;
    this.destination = { hostname: dest.hostname, port: dest.port };
  }

  protected makeBody(): MessageBody {
    return new MessageBody(this.#wire(), { tooLarge: bodyTooLarge("request"), beforeRead: this.#beforeRead });
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

  /** The origin-form target to send: the original, or the hook's edited URL path and query. */
  get path(): string {
    if (this.#url === null || this.#url.href === this.#urlHref) return this.#path;
    return `${this.#url.pathname}${this.#url.search}`;
  }
}

/** What hooks see of a response head (see {@link ProxyResponse}). */
export class HookResponse extends HookMessage implements ProxyResponse {
  status: number;
  reason: string;
  readonly #wire: BodyReader;
  readonly #method: string;
  readonly #initial: Exclude<BodySource, { kind: "wire" }> | undefined;

  /**
   * `method` is the request's (a response to HEAD has no body); `initial` is the
   * body of an answer the proxy makes itself (instead of `wire`, the origin's).
   */
  constructor(
    status: number,
    reason: string,
    fields: Field[],
    wire: BodyReader,
    method: string,
    initial?: Exclude<BodySource, { kind: "wire" }>,
  ) {
    super(fields);
    this.status = status;
    this.reason = reason;
    this.#wire = wire;
    this.#method = method;
    this.#initial = initial;
  }

  protected makeBody(): MessageBody {
    return new MessageBody(this.#wire, {
      tooLarge: bodyTooLarge("response"),
      initial: this.#initial,
      noBody: () =>
        this.#method === "HEAD" || this.status === 204 || this.status === 304
          ? "A response to HEAD or with status 204 or 304 has no body"
          : null,
    });
  }
}

/** Whether `status` is a final status a hook may send (200-599). */
export function isFinalStatus(status: unknown): status is number {
  return typeof status === "number" && Number.isInteger(status) && status >= 200 && status <= 599;
}

/** Whether `reason` is a valid reason-phrase (RFC 9112 §4: HTAB, SP, VCHAR, obs-text). */
export function isReasonPhrase(reason: unknown): reason is string {
  return typeof reason === "string" && REASON_PHRASE.test(reason);
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
    if (!isFinalStatus(reply.status) || !REASON_PHRASE.test(reason)) return null;
    return {
      status: reply.status,
      reason,
      fields: endToEnd(fields),
      body: reply.body === null ? { kind: "bytes", data: EMPTY } : { kind: "stream", stream: reply.body },
    };
  }
  if (reply === null || typeof reply !== "object") return null;
  const { status, reason, headers, body } = reply;
  if (!isFinalStatus(status)) return null;
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
