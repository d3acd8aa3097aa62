/**
 * The proxy's error classes. One base class, {@link ProxyError}, carries the
 * HTTP status the client should see, a stable machine-readable `code`, and
 * whether the message may be shown to the client (`expose`, true only for 4xx).
 * One place (`lib/respond.ts`) maps them to responses.
 *
 * @module
 */

/** Options for {@link ProxyError}. */
export interface ProxyErrorOptions {
  /** The HTTP status code the client receives. */
  status: number;
  /** A stable identifier such as `invalid-field-name`; tests assert on it. */
  code: string;
  /** The underlying error, if any. */
  cause?: unknown;
}

/** Base class of every error the proxy raises on purpose. */
export class ProxyError extends Error {
  /** The HTTP status code the client receives. */
  readonly status: number;
  /** A stable machine-readable identifier. */
  readonly code: string;
  /** Whether `message` may be sent to the client (true only for 4xx). */
  readonly expose: boolean;

  /** Creates an error with a status, a code and a message. */
  constructor(message: string, options: ProxyErrorOptions) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.status = options.status;
    this.code = options.code;
    this.expose = options.status >= 400 && options.status < 500;
  }
}

/** Malformed message syntax (RFC 9112): 400 for requests. */
export class ParseError extends ProxyError {
  /** Creates a 400 error with a stable code. */
  constructor(message: string, code: string) {
    super(message, { status: 400, code });
  }
}

/** The request line exceeds its limit (RFC 9112 §3): 414. */
export class UriTooLongError extends ProxyError {
  /** Creates a 414 error. */
  constructor(message = "Request line too long") {
    super(message, { status: 414, code: "uri-too-long" });
  }
}

/** The head exceeds its byte or field-count limit (RFC 6585 §5): 431. */
export class HeadTooLargeError extends ProxyError {
  /** Creates a 431 error. */
  constructor(message = "Request header fields too large") {
    super(message, { status: 431, code: "head-too-large" });
  }
}

/** A transfer coding the proxy does not implement (RFC 9112 §6.1): 501. */
export class NotImplementedError extends ProxyError {
  /** Creates a 501 error. */
  constructor(message: string, code = "not-implemented") {
    super(message, { status: 501, code });
  }
}

/** An HTTP major version other than 1 (RFC 9110 §15.6.6): 505. */
export class VersionNotSupportedError extends ProxyError {
  /** Creates a 505 error. */
  constructor(message = "HTTP version not supported") {
    super(message, { status: 505, code: "version-not-supported" });
  }
}

/** A policy refuses the request (for example a CONNECT port): 403. */
export class ForbiddenError extends ProxyError {
  /** Creates a 403 error. */
  constructor(message: string, code = "forbidden") {
    super(message, { status: 403, code });
  }
}

/**
 * Proxy authentication is required and the request's credentials are missing,
 * malformed or wrong: 407 with `Proxy-Authenticate` (RFC 9110 §15.5.8).
 */
export class ProxyAuthError extends ProxyError {
  /** The `Proxy-Authenticate` challenge. */
  readonly challenge: string;
  /** How long to wait before answering (repeated failures from one address are slowed down), in ms. */
  readonly delayMs: number;
  /** Creates a 407 error; `code` is `proxy-auth-required` (none sent) or `proxy-auth-failed`. */
  constructor(challenge: string, code: "proxy-auth-required" | "proxy-auth-failed", delayMs = 0) {
    super("Proxy authentication required", { status: 407, code });
    this.challenge = challenge;
    this.delayMs = delayMs;
  }
}

/** The request already passed through this proxy (RFC 9110 §7.6.3 Via): 508. */
export class LoopDetectedError extends ProxyError {
  /** Creates a 508 error. */
  constructor(message = "Forwarding loop detected") {
    super(message, { status: 508, code: "loop-detected" });
  }
}

/** The origin could not be reached or sent something invalid: 502. */
export class UpstreamError extends ProxyError {
  /** Creates a 502 error. */
  constructor(message: string, code: string, cause?: unknown) {
    super(message, { status: 502, code, cause });
  }
}

/** The origin did not connect or answer in time: 504. */
export class UpstreamTimeoutError extends ProxyError {
  /** Creates a 504 error. */
  constructor(message: string, code: string) {
    super(message, { status: 504, code });
  }
}

/** The peer's connection ended before a message was complete. */
export class PrematureEofError extends ProxyError {
  /** Creates an error for a message cut short by the peer. */
  constructor(message = "Connection closed before the message was complete") {
    super(message, { status: 400, code: "premature-eof" });
  }
}

/** A short description of an error for logs and records: a proxy error's code, else the error's name. */
export function describe(error: unknown): string {
  if (error instanceof ProxyError) return error.code;
  if (error instanceof Error) return error.name;
  return String(error);
}
