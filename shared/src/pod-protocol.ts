/* Generated from shared/protocol/pod-protocol.schema.json by scripts/gen-types.mjs. Do not edit. */

/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "RequestId".
 */
export type RequestId = string;
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "ModelId".
 */
export type ModelId = string;
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "PodId".
 */
export type PodId = string;
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "TokenId".
 */
export type TokenId = number;
/**
 * Block hash as in shared/spec/block-hash.md: 16 bytes, lowercase hex.
 *
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "BlockHash".
 */
export type BlockHash = string;
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "SloClass".
 */
export type SloClass = "interactive" | "deadline" | "batch" | "compound";
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "PodRole".
 */
export type PodRole = "prefill" | "decode" | "both";
/**
 * unauthorized: a pod with a pod secret answers 401 to a request without Authorization: Bearer <POD_SECRET> (never a stream line).
 *
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "ErrorCode".
 */
export type ErrorCode =
  | "invalid_request"
  | "unknown_model"
  | "prompt_too_long"
  | "overloaded"
  | "cancelled"
  | "kv_transfer_failed"
  | "internal_error"
  | "unauthorized";
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "StreamRecord".
 */
export type StreamRecord = TokensRecord | FinalRecord | ErrorRecord;

/**
 * Messages between the edge Worker and a model pod. Transport: HTTP/1.1 JSON bodies; generate answers with application/x-ndjson, one StreamRecord per line. Token ids are the currency: the pod never sees text.
 */
export interface EdgeServePodProtocolV1 {
  RequestId?: RequestId;
  ModelId?: ModelId;
  PodId?: PodId;
  TokenId?: TokenId;
  BlockHash?: BlockHash;
  SloClass?: SloClass;
  PodRole?: PodRole;
  SamplingParams?: SamplingParams;
  SloTargets?: SloTargets;
  CachedPrefixHint?: CachedPrefixHint;
  KvTransferDirective?: KvTransferDirective;
  AttentionOverrides?: AttentionOverrides;
  GenerateRequest?: GenerateRequest;
  TokensRecord?: TokensRecord;
  Usage?: Usage;
  FinalRecord?: FinalRecord;
  ErrorCode?: ErrorCode;
  ErrorRecord?: ErrorRecord;
  StreamRecord?: StreamRecord;
  CancelRequest?: CancelRequest;
  CancelResponse?: CancelResponse;
  SloUpdate?: SloUpdate;
  SloUpdateResponse?: SloUpdateResponse;
  PodLoad?: PodLoad;
  Health?: Health;
  PodRegistration?: PodRegistration;
  KvEvent?: KvEvent;
  KvEventBatch?: KvEventBatch;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "SamplingParams".
 */
export interface SamplingParams {
  /**
   * 0 means greedy.
   */
  temperature?: number;
  top_p?: number;
  /**
   * 0 disables top-k; a value at or above the vocabulary size keeps every token, like 0.
   */
  top_k?: number;
  seed?: number | null;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "SloTargets".
 */
export interface SloTargets {
  class: SloClass;
  /**
   * Time-to-first-token target.
   */
  ttft_ms?: number;
  /**
   * Time-per-output-token target.
   */
  tpot_ms?: number;
  /**
   * Whole answer due this many ms after the pod receives the request.
   */
  deadline_ms?: number;
  /**
   * The edge's current estimate of the output length (refined as generation goes).
   */
  expected_output_tokens?: number;
  /**
   * Preemption order: lower is preempted first.
   */
  priority?: number;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "CachedPrefixHint".
 */
export interface CachedPrefixHint {
  block_size: number;
  /**
   * Blocks of the prompt the edge's index believes this pod holds.
   */
  matched_blocks: number;
  /**
   * @maxItems 65536
   */
  block_hashes?: BlockHash[];
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "KvTransferDirective".
 */
export interface KvTransferDirective {
  /**
   * send: run the prefill here and ship the KV to peer_url; receive: take the KV for transfer_id instead of prefilling.
   */
  role: "send" | "receive";
  transfer_id: RequestId;
  peer_url?: string;
  transport?: "tcp" | "nccl" | "cuda_ipc";
}
/**
 * Per-request sparse-attention settings; omitted fields take the pod's model config.
 *
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "AttentionOverrides".
 */
export interface AttentionOverrides {
  sparse?: boolean;
  token_budget?: number;
  sink_tokens?: number;
  /**
   * At least 1: a streaming head always sees the current token.
   */
  window_tokens?: number;
  /**
   * Quest pages are re-selected every k decode steps (LServe); 1 = every step.
   */
  reselect_every?: number;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "GenerateRequest".
 */
export interface GenerateRequest {
  request_id: RequestId;
  model: ModelId;
  /**
   * @minItems 1
   * @maxItems 1048576
   */
  prompt_token_ids: [TokenId, ...TokenId[]];
  max_tokens: number;
  sampling?: SamplingParams;
  /**
   * @maxItems 64
   */
  stop_token_ids?: TokenId[];
  ignore_eos?: boolean;
  slo?: SloTargets;
  cached_prefix?: CachedPrefixHint;
  kv_transfer?: KvTransferDirective;
  attention?: AttentionOverrides;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "TokensRecord".
 */
export interface TokensRecord {
  type: "tokens";
  request_id: RequestId;
  /**
   * @minItems 1
   */
  token_ids: [TokenId, ...TokenId[]];
  /**
   * Per token: ms since the pod received the request. Same length as token_ids.
   *
   * @minItems 1
   */
  t_ms: [number, ...number[]];
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "Usage".
 */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  /**
   * Prompt tokens whose KV came from the prefix cache (or a KV transfer).
   */
  cached_tokens: number;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "FinalRecord".
 */
export interface FinalRecord {
  type: "final";
  request_id: RequestId;
  finish_reason: "stop" | "length" | "cancelled";
  usage: Usage;
  timing?: {
    queue_ms?: number;
    ttft_ms?: number;
    total_ms?: number;
    kv_transfer_ms?: number;
  };
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "ErrorRecord".
 */
export interface ErrorRecord {
  type: "error";
  request_id?: RequestId | null;
  error: {
    code: ErrorCode;
    message: string;
    param?: string | null;
  };
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "CancelRequest".
 */
export interface CancelRequest {
  request_id: RequestId;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "CancelResponse".
 */
export interface CancelResponse {
  request_id: RequestId;
  /**
   * false when the request was unknown or already finished.
   */
  cancelled: boolean;
}
/**
 * POST /v1/slo_update: the edge's refined targets for a request in flight. Each field given replaces the pod's value; the class does not change. deadline_ms keeps its origin (the pod's receipt of the GenerateRequest).
 *
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "SloUpdate".
 */
export interface SloUpdate {
  request_id: RequestId;
  /**
   * The edge's refined estimate of the whole output length (tokens already generated included).
   */
  expected_output_tokens?: number;
  deadline_ms?: number;
  priority?: number;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "SloUpdateResponse".
 */
export interface SloUpdateResponse {
  request_id: RequestId;
  /**
   * false when the request was unknown or already finished.
   */
  updated: boolean;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "PodLoad".
 */
export interface PodLoad {
  running: number;
  waiting: number;
  free_blocks: number;
  total_blocks: number;
  kv_usage?: number;
  waiting_prefill_tokens?: number;
  /**
   * Recent decode throughput per second of engine work (idle time excluded): the router's capacity estimate.
   */
  decode_tok_s?: number;
  /**
   * Recent prefill throughput per second of engine work (idle time excluded).
   */
  prefill_tok_s?: number;
  /**
   * Mean duration (ms) of the recent engine steps that gave decoding requests a token, prefill chunks riding along included: the time per output token a request joining the batch would see now. 0 when no such step ran lately.
   */
  decode_step_ms?: number;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "Health".
 */
export interface Health {
  pod_id: PodId;
  status: "starting" | "ok" | "draining";
  /**
   * @minItems 1
   */
  models: [ModelId, ...ModelId[]];
  role: PodRole;
  block_size: number;
  max_model_len?: number;
  kv_events_seq?: number;
  load: PodLoad;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "PodRegistration".
 */
export interface PodRegistration {
  pod_id: PodId;
  url: string;
  /**
   * @minItems 1
   * @maxItems 64
   */
  models: [ModelId, ...ModelId[]];
  role: PodRole;
  block_size: number;
  max_model_len?: number;
  load: PodLoad;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "KvEvent".
 */
export interface KvEvent {
  type: "stored" | "evicted" | "cleared";
  block_hashes: BlockHash[];
  /**
   * For stored: the hash before block_hashes[0], null at the root.
   */
  parent_hash?: BlockHash | null;
  /**
   * Block hash as in shared/spec/block-hash.md: 16 bytes, lowercase hex.
   */
  root_hash?: string;
}
/**
 * This interface was referenced by `EdgeServePodProtocolV1`'s JSON-Schema
 * via the `definition` "KvEventBatch".
 */
export interface KvEventBatch {
  pod_id: PodId;
  model: ModelId;
  /**
   * Sequence number of this batch, +1 per batch; a gap tells the index it missed events.
   */
  seq: number;
  block_size: number;
  events: KvEvent[];
}
