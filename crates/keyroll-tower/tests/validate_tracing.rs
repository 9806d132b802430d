//! Each request gets a `keyroll.validate` span that records its outcome, the refusal reason and
//! the issuer, when a subscriber listens.
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use validate_support::*;

/// What the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// The lines about `keyroll.validate` spans, taking them out.
    fn take_span_lines(&self) -> Vec<String> {
        let text = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
        text.lines()
            .filter(|line| line.contains("keyroll.validate{"))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_span_records_the_outcome_the_reason_and_the_issuer() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let fixture = Fixture::new();

    assert_eq!(fixture.bearer(&fixture.token("ec")).await.status, 200);
    let lines = captured.take_span_lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains(r#"outcome="accepted""#)
                && line.contains(&format!(r#"issuer="{ISS}""#))),
        "{lines:#?}"
    );

    assert_eq!(fixture.bearer("a.b.c").await.status, 401);
    let lines = captured.take_span_lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains(r#"outcome="rejected""#)
                && line.contains(r#"reason="malformed""#)),
        "{lines:#?}"
    );
    // The token itself never reaches the logs.
    let token = fixture.token("rsa");
    fixture.bearer(&format!("{token}x")).await;
    let lines = captured.take_span_lines();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|line| !line.contains(&token[..20])),
        "{lines:#?}"
    );
}
