//! The gateway: OTLP receiver (gRPC 4317, HTTP 4318) → GeoIP enrichment → batching → export.
