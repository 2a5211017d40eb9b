// The check in front of the app's backup: the `Authorization: Bearer <code>` that `d1r2 trigger`
// sends, verified against TOTP_SECRET, each code accepted once. The Worker (src/worker.ts) and
// the SvelteKit route (src/routes/api/backup/+server.ts) both call `verifyBackupRequest`.
//
// The codes are RFC 6238 TOTP, as d1r2 makes them: HMAC-SHA1, 6 digits, 30-second periods, from
// the base32 secret; or, when TOTP_SECRET is an otpauth:// URI, the algorithm, digits and period
// it names (d1r2 reads the same URI the same way). Give both sides the same value.

import { Secret, TOTP, URI } from "otpauth";

/** What the check decided: a code is good once, and only with the secret. */
export type Verdict = "accepted" | "refused";

/**
 * The TOTP generator for TOTP_SECRET. Spaces, dashes, padding and lower case are tolerated in a
 * base32 secret, as authenticator apps print it and as d1r2 reads it.
 */
export function totpFor(secret: string): TOTP {
  const text = secret.trim();
  if (text.startsWith("otpauth://")) {
    const otp = URI.parse(text);
    if (!(otp instanceof TOTP)) {
      throw new TypeError("TOTP_SECRET: the otpauth:// URI is not a totp one");
    }
    return otp;
  }
  const base32 = text.replace(/[\s=-]/g, "").toUpperCase();
  return new TOTP({
    secret: Secret.fromBase32(base32),
    algorithm: "SHA1",
    digits: 6,
    period: 30,
  });
}

/**
 * Whether `token` is a code of `totp` at `now` (milliseconds), allowing one period of clock
 * drift either way, and if so the counter (period number) it was made for. otpauth compares
 * each candidate in constant time, so an answer's timing says nothing about how close a guess
 * came.
 */
export function counterOf(totp: TOTP, token: string, now: number): number | null {
  if (!/^[0-9]+$/.test(token)) return null;
  const delta = totp.validate({ token, timestamp: now, window: 1 });
  if (delta === null) return null;
  return totp.counter({ timestamp: now }) + delta;
}

/**
 * Records that the code of `counter` was used, unless it or a later one already was: true for
 * the first use only.
 *
 * The store is one row in the app's D1 database (migrations/0001_d1r2_totp.sql) holding the
 * highest counter accepted, raised by one conditional statement, so two requests racing with the
 * same code cannot both win: D1 runs a database's writes one at a time. Keeping only the highest
 * is enough because d1r2 never sends an older code after a newer one; it also means a code from
 * the period before, still inside the drift window, is refused once a newer one has been used.
 * Workers KV would not do: it is eventually consistent, so a replay at another location could
 * pass. A Durable Object's storage would, the same way.
 */
export async function claimCounter(db: D1Database, counter: number): Promise<boolean> {
  const result = await db
    .prepare(
      `INSERT INTO d1r2_totp (id, last_counter) VALUES (1, ?1)
       ON CONFLICT (id) DO UPDATE SET last_counter = excluded.last_counter
       WHERE excluded.last_counter > d1r2_totp.last_counter`,
    )
    .bind(counter)
    .run();
  return result.meta.changes === 1;
}

/**
 * The whole check of a backup request: the bearer code is a current code of `secret` (see
 * `counterOf`) and the first use of it (see `claimCounter`). A missing secret throws rather than
 * refusing: a misconfigured app must fail loudly, not look like a wrong code.
 */
export async function verifyBackupRequest(
  request: Request,
  secret: string | undefined,
  db: D1Database,
  now: number = Date.now(),
): Promise<Verdict> {
  if (!secret) throw new Error("TOTP_SECRET is not set");
  const header = request.headers.get("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) return "refused";
  const counter = counterOf(totpFor(secret), match[1], now);
  if (counter === null) return "refused";
  return (await claimCounter(db, counter)) ? "accepted" : "refused";
}

/** The answer to a refused request: the same for a wrong, an expired and a replayed code. */
export function unauthorized(): Response {
  return new Response("invalid or expired code\n", {
    status: 401,
    headers: { "WWW-Authenticate": 'Bearer realm="backup"' },
  });
}
