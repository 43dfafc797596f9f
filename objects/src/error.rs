//! What can go wrong between hogstream and its object store, said in one line: what was asked
//! of which store, what that most likely means, and the client's own words in brackets.

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// Settings that cannot work; found before any request.
    #[error("{0}")]
    Config(String),
    #[error("object store {store}: {op}{}: {}", if key.is_empty() { String::new() } else { format!(" {key}") }, explain(.cause))]
    Request {
        op: &'static str,
        store: String,
        key: String,
        /// Kept for callers that inspect it; what it says is in the message already (not a
        /// `source`, so reports do not repeat its whole chain).
        cause: Box<object_store::Error>,
    },
    /// A downloaded file is not what was uploaded.
    #[error("object {key} is not what its manifest says: expected {expected}, got {got}")]
    Mismatch {
        key: String,
        expected: String,
        got: String,
    },
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

/// The likely meaning of a request's failure, then its deepest cause, in one line.
fn explain(error: &object_store::Error) -> String {
    let mut root: &dyn std::error::Error = error;
    while let Some(next) = root.source() {
        root = next;
    }
    let whole = error.to_string();
    let text = |s: &str| whole.contains(s) || root.to_string().contains(s);
    let meaning = if text("certificate") || text("UnknownIssuer") {
        "the server's TLS certificate is not trusted: check ca_file (or the system's CAs)"
    } else if text("Connection refused") || text("tcp connect error") || text("dns error") {
        "nothing answers at the endpoint: is the store up, and the endpoint right?"
    } else if text("SignatureDoesNotMatch")
        || text("InvalidAccessKeyId")
        || text("AccessDenied")
        || text("403 Forbidden")
    {
        "access denied: check access_key_id and secret_access_key, and the key's rights on the bucket"
    } else if text("NoSuchBucket") {
        "the bucket does not exist: create it first"
    } else {
        "the request failed"
    };
    format!(
        "{meaning} [{}]",
        s3_error(&whole).unwrap_or_else(|| {
            root.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    )
}

/// `Code: Message` of an S3 error document in `text`, if there is one.
fn s3_error(text: &str) -> Option<String> {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(close)?;
        Some(text[start..end].to_owned())
    };
    let code = between("<Code>", "</Code>")?;
    Some(match between("<Message>", "</Message>") {
        Some(message) => format!("{code}: {message}"),
        None => code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_request_says_what_it_means_in_one_line() {
        let err = ObjectsError::Request {
            op: "list",
            store: "s3://b at http://127.0.0.1:1".into(),
            key: "process-0".into(),
            cause: Box::new(object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into(),
            }),
        };
        assert_eq!(
            err.to_string(),
            "object store s3://b at http://127.0.0.1:1: list process-0: the bucket does not exist: create it first [NoSuchBucket: The specified bucket does not exist]"
        );
        assert!(
            std::error::Error::source(&err).is_none(),
            "one line, no chain"
        );
    }
}
