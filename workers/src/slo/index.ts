export { classify, offersTools, type Classification, type ClassifyInput } from "./classify";
export { defaultSloConfig, sloConfig, sloConfigSchema, type SloConfig } from "./config";
export { GROWTH, OutputLengthEstimator } from "./estimator";
export { mergeHints, parseSloBody, parseSloHeader, SLO_BODY_FIELD, SLO_HEADER, type SloHint } from "./hint";
export { metSlo, slackMs, type WorkEstimate } from "./slack";
export { SharedEstimator, sharedEstimator } from "./shared-estimator";
