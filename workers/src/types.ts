/** Hono's environment for this app: the Worker bindings and the per-request variables. */
import type { ApiKeyEntry, EdgeConfig } from "./config";
import type { RequestLog } from "./middleware/request-log";

export interface AppVariables {
  requestId: string;
  log: RequestLog;
  config: EdgeConfig;
  /** Set by the auth middleware on /v1/* routes. */
  apiKey: ApiKeyEntry;
}

export interface AppEnv {
  Bindings: Env;
  Variables: AppVariables;
}
