// The same endpoint as a SvelteKit route, for an app deployed with @sveltejs/adapter-cloudflare:
// POST /api/backup runs the app's backup when `d1r2 trigger` asks with a good code
// ($lib/server/verify.ts, the module the Worker example uses), and answers 401 otherwise. The
// bindings come from `platform.env` (declare `DB` and `TOTP_SECRET` in src/app.d.ts's
// `App.Platform`).

import type { RequestHandler } from "./$types";
import { unauthorized, verifyBackupRequest } from "$lib/server/verify";

export const POST: RequestHandler = async ({ request, platform }) => {
  const env = platform!.env;
  if ((await verifyBackupRequest(request, env.TOTP_SECRET, env.DB)) !== "accepted") {
    return unauthorized();
  }
  return runBackup();
};

/** The app's own backup: replace this stub (what to answer is in the Worker example's). */
async function runBackup(): Promise<Response> {
  const id = crypto.randomUUID();
  return Response.json({ accepted: true, backup: id }, { status: 202 });
}
