//! Exchanges → OTLP spans and RED metrics following OpenTelemetry semantic conventions; stdout formats.
