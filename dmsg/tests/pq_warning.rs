//! The downgrade warning names the peer (PROTOCOL.md §4.5). Its own binary: it installs the
//! global subscriber that captures WARN events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{TestServer, connected};
use dmsg::client::ClientConfig;
use dmsg::noise::PqSettings;
use dmsg::server::ServerConfig;

fn client_config(pq: PqSettings) -> ClientConfig {
    ClientConfig {
        pq,
        ..ClientConfig::default()
    }
}

fn classical_only() -> PqSettings {
    PqSettings {
        enabled: false,
        ..PqSettings::default()
    }
}

/// Collects WARN events as "message peer=<pk>" lines.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

/// PROTOCOL.md §4.5: the downgrade warning is logged, naming the peer.
#[tokio::test(flavor = "current_thread")]
async fn a_downgrade_logs_a_warning_naming_the_peer() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Warnings::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(warnings.clone()))
        .unwrap();
    let server = TestServer::start(ServerConfig::default()).await;
    let (legacy, _session) = connected(&server, client_config(classical_only())).await;
    let logged = warnings.0.lock().unwrap().clone();
    let peer = legacy.public_key().to_string();
    assert!(
        logged
            .iter()
            .any(|w| w.contains("classical-only") && w.contains(&peer)),
        "{logged:#?}"
    );
    legacy.close().await;
    server.stop().await;
}
