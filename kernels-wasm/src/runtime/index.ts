export { instantiateKernels, type Kernels, type KernelVariant, type KernelExports } from "./kernels";
export { relaxedSelfCheck } from "./self-check";
export { Model } from "./model";
export { loadModel, readHeader, streamInto, type ModelSource } from "./loader";
export { Sampler, argmax, type SamplerOptions } from "./sampler";
export { StreamingKV } from "./kv-cache";
export { DEFAULT_RUNTIME_OPTIONS, modelConfigFromGGUF, validateRuntimeOptions, type ModelConfig, type RuntimeOptions } from "./config";
