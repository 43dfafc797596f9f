//! The object store hogstream keeps durable files in: state checkpoints today, exports next.
//!
//! One configuration shape ([`ObjectStoreConfig`]) and one client ([`Objects`]) over the Apache
//! Arrow project's `object_store` crate (S3 and S3-compatible servers, or a local folder), with
//! only the operations hogstream needs. Keys are relative to the configured prefix. Every request
//! is counted in [`REQUESTS`] by operation and outcome, so what a feature costs in requests (and
//! so in money, on a cloud) can be read off `/metrics`.

pub mod config;
mod error;

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem,
    path::Path as Key,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xxhash_rust::xxh3::Xxh3;

pub use config::ObjectStoreConfig;
pub use error::ObjectsError;

use config::Location;

/// Requests made to the object store, by `op` (put, get, list, delete) and `outcome`.
pub const REQUESTS: &str = "hogstream_object_store_requests_total";
/// Bytes sent to (`direction="up"`) and read from (`"down"`) the object store.
pub const BYTES: &str = "hogstream_object_store_bytes_total";

/// Files above this size go up as multipart uploads, in parts of this size (S3's smallest part
/// is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Multipart parts in flight per file: with the part being filled, what an upload holds in
/// memory is (this + 1) parts.
const PARTS_IN_FLIGHT: usize = 2;

/// A file as stored: its size and content hash (xxh3-128, lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub hash: String,
}

/// The client of one configured store, rooted at its prefix.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    root: Key,
    /// Where the store is, for messages (never a secret).
    describe: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl std::fmt::Display for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Objects {
    /// A client for `config`: reads its secrets and CA file now; makes no request.
    pub fn connect(config: &ObjectStoreConfig) -> Result<Self, ObjectsError> {
        config.validate()?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match config.location()? {
            Location::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&config.region)
                    .with_retry(object_store::RetryConfig {
                        // A store that is down fails a request within seconds; callers retry
                        // whole operations on their own schedule and count the failures.
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..Default::default()
                    });
                let mut client =
                    object_store::ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                    client = client.with_allow_http(endpoint.starts_with("http://"));
                }
                if let (Some(key), Some(secret)) =
                    (&config.access_key_id, &config.secret_access_key)
                {
                    let secret = secret
                        .read("secret_access_key")
                        .map_err(|e| ObjectsError::Config(e.to_string()))?;
                    builder = builder
                        .with_access_key_id(key)
                        .with_secret_access_key(secret);
                }
                if let Some(ca) = &config.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| {
                        ObjectsError::Config(format!("ca_file: cannot read {}: {e}", ca.display()))
                    })?;
                    let cert = object_store::Certificate::from_pem(&pem).map_err(|e| {
                        ObjectsError::Config(format!("ca_file {}: {e}", ca.display()))
                    })?;
                    client = client.with_root_certificate(cert);
                }
                let store = builder
                    .with_client_options(client)
                    .build()
                    .map_err(|e| ObjectsError::Config(format!("{}: {e}", config.url)))?;
                (Arc::new(store), prefix)
            }
            Location::Folder { path, prefix } => {
                std::fs::create_dir_all(&path).map_err(|e| {
                    ObjectsError::Config(format!("cannot create {}: {e}", path.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| ObjectsError::Config(format!("{}: {e}", config.url)))?;
                (Arc::new(store), prefix)
            }
        };
        Ok(Self {
            store,
            root: Key::from(prefix),
            describe: config.to_string(),
        })
    }

    /// The same store rooted at `sub` below this one's root.
    pub fn child(&self, sub: &str) -> Self {
        Self {
            store: Arc::clone(&self.store),
            root: self.key(sub),
            describe: format!("{}/{sub}", self.describe),
        }
    }

    fn key(&self, relative: &str) -> Key {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |k, part| k.join(part))
    }

    /// `key` relative to the root, as given to this client.
    fn relative(&self, key: &Key) -> String {
        match key.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => key.to_string(),
        }
    }

    fn counted<T>(
        op: &'static str,
        requests: u64,
        result: object_store::Result<T>,
    ) -> object_store::Result<T> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(REQUESTS, "op" => op, "outcome" => outcome).increment(requests);
        result
    }

    /// Stores `bytes` under `key`, replacing what is there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectsError> {
        let len = bytes.len() as u64;
        let result = self
            .store
            .put(&self.key(key), PutPayload::from(bytes))
            .await;
        Self::counted("put", 1, result).map_err(|e| self.error("put", key, e))?;
        metrics::counter!(BYTES, "direction" => "up").increment(len);
        Ok(())
    }

    /// Uploads the file at `path` under `key`, as one request or a multipart upload, and
    /// returns its size and content hash (computed while reading it).
    pub async fn upload_file(&self, key: &str, path: &Path) -> Result<Stored, ObjectsError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ObjectsError::Local(format!("reading {}: {e}", path.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| ObjectsError::Local(format!("reading {}: {e}", path.display())))?
            .len();
        let mut hash = Xxh3::new();
        let local =
            |e: std::io::Error| ObjectsError::Local(format!("reading {}: {e}", path.display()));
        if size as usize <= PART_BYTES {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).await.map_err(local)?;
            hash.update(&buf);
            let stored = Stored {
                size: buf.len() as u64,
                hash: hex128(hash.digest128()),
            };
            self.put(key, Bytes::from(buf)).await?;
            return Ok(stored);
        }
        let target = self.key(key);
        let upload = Self::counted("put", 1, self.store.put_multipart(&target).await)
            .map_err(|e| self.error("put", key, e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(local)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            read += n as u64;
            let ready = writer.wait_for_capacity(PARTS_IN_FLIGHT).await;
            if let Err(e) = ready {
                writer.abort().await.ok();
                return Err(self.error("put", key, e));
            }
            writer.write(&buf[..n]);
        }
        let parts = read.div_ceil(PART_BYTES as u64);
        let result = writer.finish().await.map(|_| ());
        Self::counted("put", parts + 1, result).map_err(|e| self.error("put", key, e))?;
        metrics::counter!(BYTES, "direction" => "up").increment(read);
        Ok(Stored {
            size: read,
            hash: hex128(hash.digest128()),
        })
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectsError> {
        let result = match self.store.get(&self.key(key)).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match Self::counted("get", 1, result) {
            Ok(bytes) => {
                metrics::counter!(BYTES, "direction" => "down").increment(bytes.len() as u64);
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("get", key, e)),
        }
    }

    /// Downloads `key` into a new file at `path` (synced), checking it against `expected`.
    pub async fn download_file(
        &self,
        key: &str,
        path: &Path,
        expected: &Stored,
    ) -> Result<(), ObjectsError> {
        let local =
            |e: std::io::Error| ObjectsError::Local(format!("writing {}: {e}", path.display()));
        let result = self.store.get(&self.key(key)).await;
        let mut stream = Self::counted("get", 1, result)
            .map_err(|e| self.error("get", key, e))?
            .into_stream();
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut hash = Xxh3::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("get", key, e))?;
            hash.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.sync_all().await.map_err(local)?;
        metrics::counter!(BYTES, "direction" => "down").increment(size);
        let got = Stored {
            size,
            hash: hex128(hash.digest128()),
        };
        if &got != expected {
            return Err(ObjectsError::Mismatch {
                key: self.relative(&self.key(key)),
                expected: format!("{} bytes, xxh3 {}", expected.size, expected.hash),
                got: format!("{} bytes, xxh3 {}", got.size, got.hash),
            });
        }
        Ok(())
    }

    /// Every key below `prefix` with its size, in no particular order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectsError> {
        let listed: object_store::Result<Vec<_>> =
            self.store.list(Some(&self.key(prefix))).try_collect().await;
        // One request per page of 1,000 keys.
        let pages = listed.as_ref().map_or(1, |l| (l.len() as u64 / 1000) + 1);
        let listed =
            Self::counted("list", pages, listed).map_err(|e| self.error("list", prefix, e))?;
        Ok(listed
            .into_iter()
            .map(|meta| (self.relative(&meta.location), meta.size))
            .collect())
    }

    /// The names of the "folders" directly below `prefix` (common prefixes), sorted.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, ObjectsError> {
        let result = self
            .store
            .list_with_delimiter(Some(&self.key(prefix)))
            .await;
        let listed = Self::counted("list", 1, result).map_err(|e| self.error("list", prefix, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes `key`; one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match Self::counted("delete", 1, self.store.delete(&self.key(key)).await) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    /// One list request at the root: whether the store answers and the credentials work.
    pub async fn check(&self) -> Result<(), ObjectsError> {
        let result = self.store.list_with_delimiter(Some(&self.root)).await;
        Self::counted("list", 1, result)
            .map(|_| ())
            .map_err(|e| self.error("list", "", e))
    }

    fn error(&self, op: &'static str, key: &str, cause: object_store::Error) -> ObjectsError {
        ObjectsError::Request {
            op,
            store: self.describe.clone(),
            key: key.to_owned(),
            cause: Box::new(cause),
        }
    }
}

/// Lowercase hex of a 128-bit hash, as manifests write it.
pub fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

/// The size and content hash of a local file, as [`Objects::upload_file`] reports them.
pub fn hash_file(path: &Path) -> std::io::Result<Stored> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Stored {
        size,
        hash: hex128(hash.digest128()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> (tempfile::TempDir, Objects) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let objects = Objects::connect(&ObjectStoreConfig::at(url)).unwrap();
        (dir, objects)
    }

    #[tokio::test]
    async fn files_go_up_and_come_back_checked() {
        let (dir, objects) = folder();
        let objects = objects.child("process-0");
        let small = dir.path().join("small");
        std::fs::write(&small, b"manifest").unwrap();
        // Above one part: a multipart upload.
        let large = dir.path().join("large");
        let content: Vec<u8> = (0..PART_BYTES + 12_345).map(|i| (i % 251) as u8).collect();
        std::fs::write(&large, &content).unwrap();
        let s = objects.upload_file("sst/a/small", &small).await.unwrap();
        let l = objects.upload_file("sst/a/large", &large).await.unwrap();
        assert_eq!(l, hash_file(&large).unwrap());
        assert_eq!(l.size, content.len() as u64);

        let mut listed = objects.list("sst").await.unwrap();
        listed.sort();
        assert_eq!(
            listed,
            vec![
                ("sst/a/large".to_owned(), l.size),
                ("sst/a/small".to_owned(), s.size)
            ]
        );
        assert_eq!(objects.folders("sst").await.unwrap(), vec!["a".to_owned()]);

        let back = dir.path().join("back");
        objects
            .download_file("sst/a/large", &back, &l)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), content);
        // A file that is not what the manifest says is refused.
        let err = objects
            .download_file("sst/a/small", &back, &l)
            .await
            .unwrap_err();
        assert!(matches!(err, ObjectsError::Mismatch { .. }), "{err}");

        assert_eq!(
            objects.get("sst/a/small").await.unwrap().as_deref(),
            Some(&b"manifest"[..])
        );
        assert_eq!(objects.get("nothing/here").await.unwrap(), None);
        objects.delete("sst/a/small").await.unwrap();
        objects.delete("sst/a/small").await.unwrap();
        assert_eq!(objects.list("sst").await.unwrap().len(), 1);
        objects.check().await.unwrap();
    }
}
