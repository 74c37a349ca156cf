//! Logging: JSON lines on Lambda (CloudWatch), readable text locally. `RUST_LOG` sets the level.
//! EMF metric lines (`crate::metrics`, target `emf`) are written as bare JSON lines, whatever the
//! level: to stdout on Lambda, so CloudWatch reads them as metrics (to stderr locally).

use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_emf = filter_fn(|m| m.target() != crate::metrics::TARGET);
    let b = tracing_subscriber::fmt::layer().with_target(false).with_writer(std::io::stderr);
    let logs = if json {
        b.json().without_time().with_filter(not_emf).with_filter(filter).boxed()
    } else {
        b.with_ansi(false).with_filter(not_emf).with_filter(filter).boxed()
    };
    // On Lambda, stdout (CloudWatch reads EMF there); locally, stderr with the other logs, so the
    // local runner's stdout stays its banner.
    let reg = tracing_subscriber::registry().with(logs);
    let _ = if json {
        reg.with(emf_layer(std::io::stdout)).try_init()
    } else {
        reg.with(emf_layer(std::io::stderr)).try_init()
    };
}

/// The layer that writes EMF events (target `emf`) as bare lines to `w`, and nothing else.
fn emf_layer<S, W>(w: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(w)
        .event_format(BareMessage)
        .with_filter(filter_fn(|m| m.target() == crate::metrics::TARGET))
}

/// Writes an event's message alone (an EMF line is its own JSON object).
struct BareMessage;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for BareMessage
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        struct Msg<'a, 'b>(&'a mut tracing_subscriber::fmt::format::Writer<'b>, std::fmt::Result);
        impl tracing::field::Visit for Msg<'_, '_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.1 = write!(self.0, "{v:?}");
                }
            }
        }
        let mut m = Msg(&mut w, Ok(()));
        event.record(&mut m);
        m.1?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn emf_events_are_written_as_bare_json_lines_and_nothing_else_is() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(emf_layer(move || w.clone()));
        tracing::subscriber::with_default(sub, || {
            let _s = tracing::info_span!("handle", path = "/worker/claim").entered();
            tracing::info!("an ordinary log line");
            crate::metrics::worker_route(42, "claim", &serde_json::json!({"messageId": "m"}), None);
            crate::metrics::reply_sent(43, "sent");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).expect("a bare JSON line");
            assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "AgentFactory");
        }
        assert!(text.contains("\"Claims\":1.0") && !text.contains("ordinary"));
    }
}
