// The backup endpoint of examples/app as the tests run it in workerd (tests/it/app_endpoint.rs):
// the Worker example at /api/backup, the SvelteKit route at /sveltekit/api/backup (called as
// SvelteKit would, with its own database as `platform.env.DB`), and what only the tests need:
// `POST /setup` applies the example's migration to both databases, `GET /health` answers when
// up, `POST /code` answers the code the example makes for a secret (`{secret, at}`, seconds) to
// compare with d1r2's, and a request with `X-Test-Fail-Once` that the example accepts is
// answered 503 the first time, as when the backup fails after the code was used up.

import app from "../../examples/app/src/worker";
import { totpFor } from "../../examples/app/src/lib/server/verify";
import { POST } from "../../examples/app/src/routes/api/backup/+server";
import migration from "../../examples/app/migrations/0001_d1r2_totp.sql";

interface Env {
  DB: D1Database;
  SVELTEKIT_DB: D1Database;
  TOTP_SECRET: string;
}

let failedOnce = false;

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok\n");
    if (url.pathname === "/setup") {
      const statements = migration
        .split(";")
        .filter((s: string) => s.replace(/--.*$/gm, "").trim() !== "");
      for (const db of [env.DB, env.SVELTEKIT_DB]) {
        await db.batch(statements.map((s: string) => db.prepare(s)));
      }
      return new Response("migrated\n");
    }
    if (url.pathname === "/code") {
      const { secret, at } = (await request.json()) as { secret: string; at: number };
      return new Response(totpFor(secret).generate({ timestamp: at * 1000 }));
    }
    if (url.pathname === "/sveltekit/api/backup") {
      const platform = { env: { DB: env.SVELTEKIT_DB, TOTP_SECRET: env.TOTP_SECRET } };
      return POST({ request, platform } as never);
    }
    const answer = await app.fetch(request, env, ctx);
    if (answer.ok && request.headers.has("X-Test-Fail-Once") && !failedOnce) {
      failedOnce = true;
      return new Response("backup failed, try again\n", { status: 503 });
    }
    return answer;
  },
};
