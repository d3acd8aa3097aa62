/**
 * The tunnel stages: CONNECT (RFC 9110 §9.3.6: target, loop check, `onConnect`
 * or the port policy, dial, `200`, relay) and the relay after a `101 Switching
 * Protocols` (RFC 9110 §15.2.2). Both end with the relay's stats in the
 * exchange record.
 *
 * @module
 */
import { writeAnswer } from "./answer.ts";
import { closeQuietly, writeOrDrop } from "./conn.ts";
import { ForbiddenError } from "./errors.ts";
import { checkDestination } from "./destination.ts";
import { authorityOf, bypassesParent, openParentTunnel, type ParentProxy, type ParentRefusal } from "./parent.ts";
import { hopStatus } from "./proxy_status.ts";
import type { ClientSide, ExchangeContext } from "./exchange_state.ts";
import { connectionTokens, stripHopByHop, taggedViaField, viaField } from "./fields.ts";
import type { RequestHead, ResponseHead } from "./head.ts";
import { connectRequest, normalizeReply } from "./hook_messages.ts";
import { callHook } from "./hook_runner.ts";
import { type ConnectDecision, HookError, isThenable } from "./hooks.ts";
import { ConnReader } from "./reader.ts";
import { checkConnectPort, checkLoop, connectTarget, isValidDestination } from "./request_policy.ts";
import { serializeHead } from "./serialize.ts";
import { relay, type RelaySide, type TunnelStats } from "./tunnel.ts";
import { connectUpstream, type UpstreamConn } from "./upstream.ts";
import { writeAll } from "./writer.ts";

const ESTABLISHED = new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n");
/** Fields kept on a 101 (the protocol switched to). */
export const KEEP_UPGRADE: ReadonlySet<string> = new Set(["upgrade"]);

/**
 * CONNECT: authority-form target, loop check, then `onConnect` (if set) or the
 * port policy, then a 200 and a byte relay. Bytes the client sent after the
 * head (early TLS data) are relayed first, never lost. Resolves to false (the
 * connection is done).
 */
export async function connectTunnel(ctx: ExchangeContext, client: ClientSide, head: RequestHead): Promise<boolean> {
  const draft = client.draft;
  draft.kind = "connect";
  let { hostname, port } = connectTarget(head.target);
  const hooks = ctx.hooks;
  let decision: ConnectDecision | void = undefined;
  if (hooks !== null && hooks.onConnect !== null && client.hook !== null) {
    const hctx = client.hook.ctx;
    const onConnect = hooks.onConnect;
    const result = callHook(
      client,
      ctx,
      "onConnect",
      () => onConnect(connectRequest(hostname, port, head.fields), hctx),
    );
    decision = isThenable(result) ? await result : result;
  }
  if (decision === undefined || decision === null) checkConnectPort(ctx.options.connectPorts, port);
  else if (decision === "deny") throw new ForbiddenError("CONNECT denied by the proxy's policy", "connect-denied");
  else if (decision !== "allow") {
    if (typeof decision === "object" && "redirect" in decision && !(decision instanceof Response)) {
      if (!isValidDestination(decision.redirect ?? {})) throw new HookError("onConnect", "invalid");
      ({ hostname, port } = decision.redirect);
    } else {
      // A reply is the answer (a 2xx would tell the client a tunnel is open: not allowed).
      const answer = normalizeReply(decision);
      if (answer === null || answer.status < 300) throw new HookError("onConnect", "invalid");
      await writeAnswer(client, answer, {
        method: head.method,
        minor: head.minor,
        close: true,
        hook: "onConnect",
      });
      return false;
    }
  }
  checkLoop(head.fields, ctx.options.via, ctx.options.instanceId);
  const started = draft.timed ? performance.now() : 0;
  // Stage: destination policy, on the address actually dialled (the parent resolves names it is given).
  const parent = ctx.parent !== null && !bypassesParent(ctx.noProxy, hostname, port) ? ctx.parent : null;
  const checked = checkDestination(ctx.destinations, hostname, port, parent === null, ctx.options.connectTimeoutMs);
  const dial = typeof checked === "string" ? checked : await checked;
  const conn = await connectUpstream(parent?.hostname ?? dial, parent?.port ?? port, ctx.options.connectTimeoutMs);
  const reader = new ConnReader(conn, 65536);
  if (parent !== null) {
    // The parent's CONNECT (with our tagged Via: a CONNECT loop through parents is caught like any other);
    // bytes it sent past its 200 stay in `reader` for the relay.
    let answer;
    try {
      answer = await openParentTunnel(conn, reader, parent, authorityOf(hostname, port), {
        timeoutMs: ctx.options.responseTimeoutMs,
        via: taggedViaField(ctx.options.via, ctx.options.instanceId, 1)[1],
      });
    } catch (error) {
      closeQuietly(conn);
      throw error;
    }
    if (!answer.ok) {
      await relayRefusal(ctx, client, answer, parent);
      return false;
    }
  }
  if (draft.timed) draft.connectMs = Math.round((performance.now() - started) * 100) / 100;
  client.upstream = conn;
  draft.upstream = conn;
  draft.parent = parent !== null;
  try {
    try {
      await writeAll(client.out, ESTABLISHED);
    } catch {
      // The client left before the tunnel opened: drop the origin side too.
      closeQuietly(conn);
      return false;
    }
    client.finalHeadSent = true;
    draft.status = 200;
    const origin = { conn, reader };
    await runRelay(ctx, client, origin, head.target, "connect");
    return false;
  } finally {
    client.upstream = null;
  }
}

/** Relays a 101 response, then bytes both ways (RFC 9110 §15.2.2). */
export async function switchProtocols(
  ctx: ExchangeContext,
  client: ClientSide,
  res: ResponseHead,
  up: UpstreamConn,
): Promise<boolean> {
  const tokens = connectionTokens(res.fields);
  const fields = stripHopByHop(res.fields, tokens, KEEP_UPGRADE);
  fields.push(viaField(ctx.options.via, res.minor));
  fields.push(["Connection", "Upgrade"]);
  await writeOrDrop(client.out, serializeHead(`HTTP/1.1 101 ${res.reason}`, fields), up.conn);
  client.finalHeadSent = true;
  client.draft.kind = "upgrade";
  client.draft.status = 101;
  client.inBody = false; // the tunnel has its own idle timeout; the body timeout no longer applies
  await runRelay(ctx, client, up, up.key, "upgrade");
  return false;
}

async function runRelay(
  ctx: ExchangeContext,
  client: ClientSide,
  origin: RelaySide,
  target: string,
  kind: "connect" | "upgrade",
): Promise<void> {
  const draft = client.draft;
  draft.inAtTunnel = client.reader.consumed;
  draft.outAtTunnel = client.written;
  const metrics = ctx.pages.metrics;
  metrics?.tunnelOpened();
  let stats: TunnelStats;
  try {
    stats = await relay(client, origin, {
      target,
      idleTimeoutMs: ctx.options.tunnelIdleTimeoutMs,
      halfClosedIdleMs: ctx.options.bodyTimeoutMs,
      signal: ctx.abortSignal,
    });
  } finally {
    metrics?.tunnelClosed();
  }
  draft.tunnel = stats; // how it ended is the record's tunnelEnd, not an error
  reportTunnel(ctx, stats, kind);
}

function reportTunnel(ctx: ExchangeContext, stats: TunnelStats, kind: "connect" | "upgrade"): void {
  ctx.logger.log(stats.end === "idle-timeout" ? "info" : "debug", "tunnel-end", { kind, ...stats });
  ctx.options.onTunnelEnd?.(stats);
}

/** The parent proxy refused the CONNECT: its answer goes to the client as it came, then the connection closes. */
async function relayRefusal(
  ctx: ExchangeContext,
  client: ClientSide,
  answer: ParentRefusal,
  parent: ParentProxy,
): Promise<void> {
  const fields = answer.fields;
  fields.push(viaField(ctx.options.via, 1));
  fields.push(hopStatus(ctx.options, answer.status, parent));
  fields.push(["Content-Length", String(answer.body.length)], ["Connection", "close"]);
  const bytes = serializeHead(`HTTP/1.1 ${answer.status} ${answer.reason}`, fields, answer.body);
  client.draft.status = answer.status;
  client.draft.error = "parent-refused";
  await writeAll(client.out, bytes);
  client.finalHeadSent = true;
}
