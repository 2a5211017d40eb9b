// A Worker whose POST /api/backup runs the app's backup when `d1r2 trigger` asks with a good
// code (src/lib/server/verify.ts), and answers 401 otherwise. See README.md.

import { unauthorized, verifyBackupRequest } from "./lib/server/verify";

export interface Env {
  /** The app's database; it also holds the replay store (migrations/). */
  DB: D1Database;
  /** The base32 secret (or otpauth:// URI) d1r2 has as TOTP_SECRET: `wrangler secret put`. */
  TOTP_SECRET: string;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname !== "/api/backup") return new Response("not found\n", { status: 404 });
    if (request.method !== "POST") {
      return new Response("method not allowed\n", { status: 405, headers: { Allow: "POST" } });
    }
    if ((await verifyBackupRequest(request, env.TOTP_SECRET, env.DB)) !== "accepted") {
      return unauthorized();
    }
    return runBackup(env, ctx);
  },
} satisfies ExportedHandler<Env>;

/**
 * The app's own backup: replace this stub. Answer 2xx once the backup is done or reliably
 * started (202 with an id to follow it by, as here), and 503 (with `Retry-After` if you know when)
 * when it cannot run now: d1r2 retries 5xx, 408 and 429 with a fresh code, and fails at once on
 * any other 4xx. A long backup belongs in `ctx.waitUntil` or a Workflow, so the request answers
 * within d1r2's `--timeout`.
 */
async function runBackup(_env: Env, _ctx: ExecutionContext): Promise<Response> {
  const id = crypto.randomUUID();
  return Response.json({ accepted: true, backup: id }, { status: 202 });
}
