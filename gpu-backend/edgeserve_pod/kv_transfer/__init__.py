"""KV transfer between pods for disaggregated prefill/decode (DistServe), driven by the pod
protocol's `kv_transfer` directive. Transport: TCP (an HTTP PUT between pods); see serve.py."""
