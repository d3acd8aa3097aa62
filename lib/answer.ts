/**
 * Writing an answer of the proxy's own (a hook's reply, a built-in policy's
 * answer) and the framing choice for bodies the proxy produces.
 *
 * @module
 */
import { type Field, getAll, has } from "./fields.ts";
import type { Answer } from "./hook_messages.ts";
import { HookError, type HookName } from "./hooks.ts";
import { StreamBody } from "./message_view.ts";
import { httpDate, serializeHead } from "./serialize.ts";
import { type BodyWriter, ChunkedBodyWriter, RawBodyWriter, writeAll } from "./writer.ts";
import { coarseNow } from "./clock.ts";
import type { ClientSide } from "./exchange_state.ts";
import type { BodyReader } from "./reader.ts";

/** How a body the proxy produces is framed for the client (RFC 9112 §6). */
export type OwnFraming =
  | { kind: "none" }
  | { kind: "length"; length: number; send: boolean }
  | { kind: "chunked" }
  | { kind: "close" };

/**
 * The framing of a body the proxy (or a hook) produced: a known length gets
 * Content-Length; an unknown one chunked for HTTP/1.1 and close-delimited for
 * HTTP/1.0 (RFC 9112 §6.3). Responses to HEAD keep a known length but send no
 * body; 204 and 304 have neither (RFC 9110 §6.4.1).
 *
 * @param length The body length, or -1 when unknown (a stream).
 */
export function ownFraming(length: number, status: number, method: string, clientMinor: number): OwnFraming {
  if (status === 204 || status === 304) return { kind: "none" };
  if (method === "HEAD") return length >= 0 ? { kind: "length", length, send: false } : { kind: "none" };
  if (length >= 0) return { kind: "length", length, send: true };
  return clientMinor === 1 ? { kind: "chunked" } : { kind: "close" };
}

/** Adds the framing fields for `framing` (and `Connection: close`) to `fields`. */
export function addFramingFields(fields: Field[], framing: OwnFraming, close: boolean): void {
  if (framing.kind === "length") fields.push(["Content-Length", String(framing.length)]);
  else if (framing.kind === "chunked") fields.push(["Transfer-Encoding", "chunked"]);
  if (close || framing.kind === "close") fields.push(["Connection", "close"]);
}

/** Options for {@link writeAnswer}. */
export interface AnswerOptions {
  /** The request method (HEAD: no body). */
  method: string;
  /** The client's minor HTTP version. */
  minor: number;
  /** Whether the connection closes after the answer. */
  close: boolean;
  /** The hook the answer came from, for errors its body stream raises. */
  hook: HookName;
}

/**
 * Writes an answer: status line, fields (`Date` added when missing), framing,
 * and its body. Resolves to whether the connection may carry another request.
 * A body stream that fails after the head is out rejects (the caller aborts
 * the connection: a body is never made to look complete).
 */
export async function writeAnswer(client: ClientSide, answer: Answer, o: AnswerOptions): Promise<boolean> {
  const out = client.out;
  const body = answer.body;
  const framing = ownFraming(body.kind === "bytes" ? body.data.length : -1, answer.status, o.method, o.minor);
  const fields: Field[] = [];
  if (!has(answer.fields, "date")) fields.push(["Date", httpDate()]);
  for (const f of answer.fields) fields.push(f);
  addFramingFields(fields, framing, o.close);
  const inline = body.kind === "bytes" && framing.kind === "length" && framing.send ? body.data : null;
  const reader = body.kind === "stream"
    ? new StreamBody(body.stream, (error) => new HookError(o.hook, "failed", error))
    : null;
  if (reader !== null && (framing.kind === "none" || framing.kind === "length")) reader.cancel();
  await writeAll(out, serializeHead(`HTTP/1.1 ${answer.status} ${answer.reason}`, fields, inline));
  client.finalHeadSent = true;
  client.draft.status = answer.status;
  if (client.draft.timed) client.draft.contentType = getAll(fields, "content-type")[0] ?? null;
  if (reader !== null && !reader.done) {
    const writer: BodyWriter = framing.kind === "chunked" ? new ChunkedBodyWriter(out) : new RawBodyWriter(out);
    await streamBody(client, reader, writer);
    await writer.end();
  }
  return !o.close && framing.kind !== "close";
}

/**
 * Copies a hook's body stream to the client, piece by piece (backpressure: each
 * write is awaited). While it runs the stream is the session's: the body
 * timeout and a forced shutdown cancel it, so a stream that stops producing
 * never holds the connection.
 */
export async function streamBody(client: ClientSide, source: StreamBody, writer: BodyWriter): Promise<void> {
  client.stream = source;
  client.inBody = true;
  client.activity = coarseNow();
  try {
    await pumpBody(source, writer, () => client.activity = coarseNow());
  } finally {
    client.stream = null;
  }
}

/** Copies a body to a writer, piece by piece (backpressure: each write is awaited). */
export async function pumpBody(source: BodyReader, writer: BodyWriter, touch: () => void): Promise<void> {
  while (true) {
    const data = await source.next();
    if (data === null) return;
    touch();
    await writer.write(data);
    touch();
  }
}
