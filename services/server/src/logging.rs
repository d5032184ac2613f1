//! Log output on stderr: the filter, the line format, and colour only for a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber. A bad filter falls back to `info` rather than failing:
/// the configuration error it would report could not be logged anyway.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Escape codes are for terminals; in a file or a pipe they are noise a log shipper keeps.
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt.with_ansi(ansi)).init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .with_ansi(false)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init(),
    }
}
