//! JSON log lines (`SKYWIRE_LOG_FORMAT=json`): one object per line with `timestamp`, `level`,
//! `target`, `fields`, and — inside a span — `span` and the OpenTelemetry `trace_id` and
//! `span_id`, so a log line can be joined to its trace.

use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer writing JSON lines to stderr.
#[derive(Debug, Default)]
pub struct JsonLines {
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl JsonLines {
    /// A layer writing to stderr.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The current time in RFC 3339 (UTC, microseconds), as tracing-subscriber writes it.
fn timestamp() -> String {
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut text));
    text
}

/// One JSON line for a fatal error printed outside any subscriber (start-up, the last error).
pub fn error_line(target: &str, message: &str) -> String {
    let mut fields = Map::new();
    fields.insert("message".into(), Value::String(message.to_owned()));
    let mut line = Map::new();
    line.insert("timestamp".into(), Value::String(timestamp()));
    line.insert("level".into(), Value::String("ERROR".into()));
    line.insert("target".into(), Value::String(target.to_owned()));
    line.insert("fields".into(), Value::Object(fields));
    Value::Object(line).to_string()
}

/// Collects an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert(
            "level".into(),
            Value::String(metadata.level().as_str().into()),
        );
        line.insert("target".into(), Value::String(metadata.target().into()));
        line.insert("fields".into(), Value::Object(fields));
        // The event's span from the whole subscriber, not this layer's filtered view: a WARN
        // line inside an INFO span still names it under `RUST_LOG=warn`.
        let dispatch = self.dispatch.get().and_then(|weak| weak.upgrade());
        let current = || {
            let dispatch = dispatch.as_ref()?;
            let current = dispatch.current_span();
            Some((current.id()?.clone(), current.metadata()?.name()))
        };
        let span = match event.parent() {
            Some(id) => ctx.span(id).map(|span| (id.clone(), span.name())),
            None if event.is_contextual() => current(),
            None => None,
        };
        if let Some((id, name)) = span {
            let mut about = Map::new();
            about.insert("name".into(), Value::String(name.into()));
            line.insert("span".into(), Value::Object(about));
            if let Some(context) = dispatch
                .as_ref()
                .and_then(|dispatch| tracing_opentelemetry::get_otel_context(&id, dispatch))
            {
                let span = context.span();
                let ids = span.span_context();
                if ids.is_valid() {
                    line.insert("trace_id".into(), Value::String(ids.trace_id().to_string()));
                    line.insert("span_id".into(), Value::String(ids.span_id().to_string()));
                }
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // A closed stderr loses the line; it never panics.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
