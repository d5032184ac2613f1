//! Log output on stderr (filter, line format, colour only for a terminal) and traces over
//! OTLP when a collector is configured.

use std::fmt;
use std::io::IsTerminal;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter};

use crate::config::{LogFormat, TelemetryConfig};

/// Spans below this level stay out of the traces whatever the log filter says: the log
/// filter is for people reading stderr, the trace pipeline has its own sampling.
const TRACE_LEVEL: LevelFilter = LevelFilter::INFO;

/// Installs the global subscriber; with an OTLP endpoint, also the tracer provider, which
/// the caller shuts down (flushing spans) before the runtime goes. Must run inside the
/// Tokio runtime: the gRPC exporter's connection lives on it.
pub fn init(
    filter: &str,
    format: LogFormat,
    telemetry: &TelemetryConfig,
) -> Result<Option<SdkTracerProvider>, String> {
    // A bad filter falls back to `info` rather than failing: the error could not be logged.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Escape codes are for terminals; in a file or a pipe they are noise a log shipper keeps.
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .event_format(WithTraceId(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
    };
    let provider = match &telemetry.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("telemetry.otlp_endpoint {endpoint:?}: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(telemetry.service_name.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    // W3C trace context, for the Kafka headers that carry a change's trace between tiers.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("uaprof"))
            .with_filter(TRACE_LEVEL)
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(provider)
}

/// The JSON line of tracing-subscriber with the OpenTelemetry trace and span ids of the
/// current span in front, so a log search can jump to the trace and back.
struct WithTraceId(Format<Json>);

impl<S> FormatEvent<S, JsonFields> for WithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        match line.strip_prefix('{') {
            Some(rest) if sc.is_valid() => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                sc.trace_id(),
                sc.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}
