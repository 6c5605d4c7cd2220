/** The Worker isolate's output-length estimator, shared by every request the isolate serves. */
import { defaultSloConfig } from "./config";
import { OutputLengthEstimator } from "./estimator";

export const isolateEstimator = new OutputLengthEstimator({
  priorOutputTokens: defaultSloConfig.priorOutputTokens,
  samples: defaultSloConfig.estimatorSamples,
  keys: defaultSloConfig.estimatorKeys,
});
