/** The Worker: the Hono app, and the Durable Object classes its bindings name (wrangler.toml). */
import { createApp } from "./app";

export { PrefixIndex } from "./durable/prefix-index";
export { OutputLengths } from "./durable/output-estimator";
export { PodRegistry } from "./durable/pod-registry";
export { RateLimiter } from "./durable/rate-limiter";

export default createApp();
