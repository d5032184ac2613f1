//! W3C trace context (`traceparent`, `tracestate`) in Kafka record headers, through the
//! global propagator the binary installs; with no tracer installed the current span has no
//! context, nothing is injected, and headers pass through as they came.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Inject(Vec<(String, String)>);

impl Injector for Inject {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct Extract<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for Extract<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| std::str::from_utf8(h.value?).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// The current span's trace context as headers, or `otherwise` when the current span is
/// not traced (so a context that came in is still passed on).
pub(crate) fn current_or(otherwise: OwnedHeaders) -> OwnedHeaders {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return otherwise;
    }
    let mut fields = Inject(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    fields.0.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        })
    })
}

/// Makes `span` a child of the trace context in `headers`, if they carry one.
pub(crate) fn continue_from<H: Headers>(span: &tracing::Span, headers: Option<&H>) {
    let Some(headers) = headers else { return };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    if cx.span().span_context().is_valid() {
        // Fails only when no tracer is installed, and then there is nothing to join.
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` header of a record, if any.
pub(crate) fn traceparent<H: Headers>(headers: Option<&H>) -> Option<String> {
    Extract(headers?).get("traceparent").map(str::to_owned)
}
