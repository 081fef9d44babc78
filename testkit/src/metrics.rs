//! Reads Prometheus text as a scraper would: `GET /metrics` over HTTP/1.1, a real parser
//! (`prometheus-parse`), and the rules a scraper relies on — one family per name, with
//! OpenMetrics' view that counter `x_total` and histogram `x_bucket`/`x_sum`/`x_count` are all
//! family `x`, so `x` may not also be a gauge.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` at `addr`; panics unless it answers 200 in the text format.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The families of `text` by name with their type; panics if the parser refuses it or two
/// families share a name.
pub fn families(text: &str) -> BTreeMap<String, String> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    assert!(!scrape.samples.is_empty(), "no samples in\n{text}");
    let mut families = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert!(
            families.insert(name.to_owned(), kind.to_owned()).is_none(),
            "family {name} twice"
        );
    }
    let mut open_metrics: BTreeMap<String, &str> = BTreeMap::new();
    for (name, kind) in &families {
        assert_eq!(
            name.ends_with("_total"),
            kind == "counter",
            "{name} ({kind}): `_total` is for counters and every counter ends in it"
        );
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut derived = vec![base.to_owned()];
        if kind == "histogram" {
            derived.extend(["_bucket", "_sum", "_count"].map(|s| format!("{base}{s}")));
        }
        for derived in derived {
            if let Some(other) = open_metrics.insert(derived.clone(), name) {
                panic!("{name} and {other} are both family {derived} to a scraper");
            }
        }
    }
    families
}

/// The value of the sample written exactly as `series` (name and labels, e.g.
/// `x_total{outcome="hybrid"}`) in `text`, if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}
