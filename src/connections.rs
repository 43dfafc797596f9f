//! Start-up checks of the connections a command needs. A misconfigured connection (a wrong
//! password, a CA that does not sign the server's certificate, an expired certificate, a
//! plaintext client at a TLS port or the reverse) stops start-up within seconds with one line that
//! names the hop and the cause, instead of a retry loop that never says why. A server that is
//! simply not there yet is not a misconfiguration: each caller decides whether to wait for it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Result, bail};
use hogstream_engine::{KafkaConfig, source};
use hogstream_sinks::ClickHouseConfig;
use rdkafka::{ClientContext, consumer::BaseConsumer, consumer::Consumer, error::KafkaError};

/// How long a check waits for a broker's or ClickHouse's answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// What a check found, when nothing is misconfigured.
#[derive(Debug, PartialEq, Eq)]
pub enum Reach {
    Ready,
    /// Nothing answered (refused, timed out): maybe not started yet.
    Unreachable(String),
}

/// The errors librdkafka reports while the check runs.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(format!("{error}: {reason}"));
        }
    }

    // Some causes (a disconnect during the first request) are only logged by librdkafka, and
    // only with broker debugging on.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        if (matches!(level, Emerg | Alert | Critical | Error | Warning | Notice) || fac == "FAIL")
            && let Ok(mut seen) = self.0.lock()
        {
            seen.push(format!("{fac}: {log_message}"));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Errors {}

/// The cause of a failed connection, when it is a misconfiguration, from librdkafka's words.
fn kafka_misconfiguration(reasons: &[String]) -> Option<&'static str> {
    let any = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    if any("SASL authentication error") || any("Authentication failed") {
        Some(
            "authentication failed: wrong username or password, or a SASL mechanism the broker does not offer",
        )
    } else if any("certificate has expired") || any("certificate expired") {
        Some(
            "a TLS certificate has expired (the broker's, or the client certificate the broker checked)",
        )
    } else if any("certificate verify failed") || any("unable to get local issuer certificate") {
        Some(
            "the broker's TLS certificate is not signed by a trusted CA: check [kafka.security] ca_file",
        )
    } else if any("incorrect security.protocol")
        || any("connecting to a SSL listener")
        || any("in state APIVERSION_QUERY")
    {
        Some(
            "the broker closed the connection during the handshake: a plaintext client at a TLS listener? check [kafka.security] protocol",
        )
    } else if any("wrong version number")
        || any("packet length too long")
        || any("SSL handshake failed")
    {
        Some("the TLS handshake failed: is the listener plaintext? check [kafka.security] protocol")
    } else {
        None
    }
}

/// Asks the brokers for metadata with every setting the hop will use.
pub fn kafka(hop: &str, kafka: &KafkaConfig) -> Result<Reach> {
    let context = Errors::default();
    let consumer: BaseConsumer<Errors> = source::client_config(kafka)
        .set("group.id", "hogstream-connection-check")
        // Broker debugging makes librdkafka log each failed connection with the state it
        // failed in (kept by the context, never printed): a plaintext client at a TLS port
        // shows only as a disconnect while asking for the API versions.
        .set("debug", "broker")
        // rdkafka lowers librdkafka's log level to the process's; these logs are for us only.
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug)
        .create_with_context(context.clone())?;
    let Err(e) = consumer.fetch_metadata(None, CHECK_TIMEOUT) else {
        return Ok(Reach::Ready);
    };
    // librdkafka hands its errors over when the client is polled (only worth the wait when
    // the brokers did not answer: it is a quarter of a second).
    for _ in 0..5 {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(50))
            && let Ok(mut seen) = context.0.lock()
        {
            seen.push(e.to_string());
        }
    }
    let reasons = context.0.lock().map(|r| r.clone()).unwrap_or_default();
    let detail = reasons.last().cloned().unwrap_or_else(|| e.to_string());
    if let Some(cause) = kafka_misconfiguration(&reasons) {
        bail!(
            "kafka ({hop}, {}, {}): {cause} [{detail}]",
            kafka.brokers,
            kafka.security
        );
    }
    Ok(Reach::Unreachable(detail))
}

/// The cause of a failed ClickHouse request, when it is a misconfiguration.
fn clickhouse_misconfiguration(error: &str) -> Option<&'static str> {
    let has = |needle: &str| error.contains(needle);
    if has("Code: 516") || has("AUTHENTICATION_FAILED") || has("Authentication failed") {
        Some("authentication failed: wrong user or password")
    } else if has("Expired") || has("expired") {
        Some("the server's TLS certificate has expired")
    } else if has("UnknownIssuer") || has("invalid peer certificate") {
        Some(
            "the server's TLS certificate is not signed by a trusted CA: check [clickhouse] ca_file",
        )
    } else if has("InvalidContentType") || has("corrupt message") {
        Some("the TLS handshake failed: the server speaks plain HTTP; use an http:// url")
    } else if has("invalid HTTP version") || has("connection closed before message completed") {
        Some("the server did not answer in HTTP: is it an HTTPS port? use an https:// url")
    } else {
        None
    }
}

/// The full text of an error with its causes, as the checks classify it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs `SELECT 1` with the hop's client settings.
pub async fn clickhouse(hop: &str, config: &ClickHouseConfig) -> Result<Reach> {
    let query = config.client().query("SELECT 1").fetch_one::<u8>();
    let error = match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(Ok(_)) => return Ok(Reach::Ready),
        Ok(Err(e)) => chain(&e),
        Err(_) => format!("no answer within {CHECK_TIMEOUT:?}"),
    };
    if let Some(cause) = clickhouse_misconfiguration(&error) {
        bail!("clickhouse ({hop}, {}): {cause} [{error}]", config.url);
    }
    // A plain HTTP request to a TLS port is usually answered by a reset, which a server in
    // trouble can also give: ask the port itself whether it speaks TLS.
    if let Some(address) = config.url.strip_prefix("http://") {
        let address = address.split('/').next().unwrap_or(address).to_owned();
        if tokio::task::spawn_blocking(move || speaks_tls(&address))
            .await
            .unwrap_or(false)
        {
            bail!(
                "clickhouse ({hop}, {}): the server speaks TLS: is it an HTTPS port? use an https:// url [{error}]",
                config.url
            );
        }
    }
    Ok(Reach::Unreachable(error))
}

/// Whether `host:port` completes a TLS handshake (any certificate: this is a diagnosis, never
/// a connection that carries data).
fn speaks_tls(address: &str) -> bool {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    #[allow(deprecated)] // ring's provider, as for the ClickHouse client itself
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .to_owned();
    let Ok(name) = ServerName::try_from(host) else {
        return false;
    };
    let Ok(mut connection) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let Ok(mut socket) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = socket.set_write_timeout(Some(Duration::from_secs(3)));
    connection.complete_io(&mut socket).is_ok() && !connection.is_handshaking()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_reasons_name_their_cause() {
        let cause = |r: &str| kafka_misconfiguration(&[r.to_owned()]);
        assert!(
            cause("SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512")
                .unwrap()
                .contains("wrong username or password")
        );
        assert!(cause("ssl://127.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed").unwrap().contains("ca_file"));
        assert!(cause("Connect to ipv4#127.0.0.1:9094 failed: Connection refused").is_none());
    }

    #[test]
    fn clickhouse_errors_name_their_cause() {
        assert!(
            clickhouse_misconfiguration(
                "bad response: Code: 516. DB::Exception: hogstream: Authentication failed"
            )
            .unwrap()
            .contains("password")
        );
        assert!(
            clickhouse_misconfiguration(
                "error trying to connect: tcp connect error: Connection refused"
            )
            .is_none()
        );
    }
}
