//! Where a Delta table lives: a local path or a URI (`file://`, `s3://`,
//! `s3a://`, `az://`, `azure://`, `abfs://`, `abfss://`, `gs://`), and the
//! object store that reaches it.
//!
//! Credentials and endpoints come the way object_store users already set
//! them: the standard `AWS_*`, `AZURE_*` and `GOOGLE_*` environment
//! variables, read by each builder's `from_env`. Non-secret options (an
//! endpoint, `allow_http`, a region) may also be given explicitly; keys that
//! name a secret are refused there, so that a secret can only come from the
//! environment and never sits in a project file, a log line or an error.
//! [`StorageLocation`]'s `Display` shows the URI without user info or query
//! (where a SAS token would be).

use std::collections::BTreeMap;
use std::sync::Arc;

use delta_kernel::object_store::{self, DynObjectStore};
use url::Url;

use crate::error::{Error, Result};

/// A table's (or a store's) location and the object store rooted at its
/// bucket, container or filesystem root.
#[derive(Clone)]
pub struct StorageLocation {
    url: Url,
    store: Arc<DynObjectStore>,
}

impl std::fmt::Debug for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageLocation")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.url))
    }
}

impl StorageLocation {
    /// Parses `uri` (a local path, relative or absolute, or a URI of a
    /// supported scheme) and builds the object store that reaches it, with
    /// the environment's credentials and the non-secret `options`.
    ///
    /// Nothing is contacted yet: a wrong endpoint or credential shows on the
    /// first read.
    pub fn parse(uri: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let url = checked_url(uri, options)?;
        let store = build_store(&url, options)?;
        Ok(StorageLocation { url, store })
    }

    /// Checks `uri` and `options` as [`StorageLocation::parse`] does (a
    /// supported scheme, no secret among the options) without building the
    /// store, which may need credentials from the environment that only the
    /// commands that touch the tables have.
    pub fn check(uri: &str, options: &BTreeMap<String, String>) -> Result<()> {
        let url = checked_url(uri, options)?;
        if url.scheme() != "file" && !REMOTE_SCHEMES.contains(&url.scheme()) {
            return Err(Error::Storage {
                location: redacted(&url),
                message: format!(
                    "unsupported scheme {:?} (use a local path, file://, s3://, az://, \
                     abfss:// or gs://)",
                    url.scheme()
                ),
            });
        }
        Ok(())
    }

    /// Like [`StorageLocation::parse`], with a relative local path taken
    /// from `base` (a project's root) rather than the working directory.
    pub fn parse_in(
        uri: &str,
        base: &std::path::Path,
        options: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let trimmed = uri.trim();
        if is_uri(trimmed) || std::path::Path::new(trimmed).is_absolute() {
            return Self::parse(trimmed, options);
        }
        Self::parse(&base.join(trimmed).display().to_string(), options)
    }

    /// The location of sub-directory `name`, on the same store.
    pub fn child(&self, name: &str) -> Result<Self> {
        let url = self
            .url
            .join(&format!("{}/", name.trim_matches('/')))
            .map_err(|e| Error::Storage {
                location: redacted(&self.url),
                message: format!("{name:?} does not make a location: {e}"),
            })?;
        if url.scheme() != "file"
            && let Err(e) = object_store::path::Path::from_url_path(url.path())
        {
            return Err(Error::Storage {
                location: redacted(&url),
                message: format!("not a path an object store can hold: {e}"),
            });
        }
        Ok(StorageLocation {
            url,
            store: self.store.clone(),
        })
    }

    /// The location as a URL (with a trailing slash: a directory).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store, rooted at the bucket, container or `/`.
    pub fn store(&self) -> Arc<DynObjectStore> {
        self.store.clone()
    }

    /// The location's path inside its object store (the bucket's,
    /// container's or filesystem's root is the store's root).
    pub fn object_path(&self) -> object_store::path::Path {
        object_store::path::Path::from_url_path(self.url.path()).unwrap_or_default()
    }

    /// Whether the location is on the local filesystem.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }
}

/// The URL of `uri`, refusing options that name a secret, a secret in the
/// URI itself (a password, a query such as a SAS token) and paths an object
/// store cannot hold.
fn checked_url(uri: &str, options: &BTreeMap<String, String>) -> Result<Url> {
    let url = location_url(uri)?;
    if url.password().is_some() || url.query().is_some() {
        return Err(Error::Storage {
            location: redacted(&url),
            message: "the location carries a password or a query (a SAS token?); credentials \
                      come from the environment (AWS_*, AZURE_STORAGE_SAS_KEY, …), not the URI"
                .to_string(),
        });
    }
    if url.scheme() != "file"
        && let Err(e) = object_store::path::Path::from_url_path(url.path())
    {
        return Err(Error::Storage {
            location: redacted(&url),
            message: format!("not a path an object store can hold: {e}"),
        });
    }
    if let Some(key) = options.keys().find(|k| is_secret_key(k)) {
        return Err(Error::Storage {
            location: redacted(&url),
            message: format!(
                "the storage option {key:?} names a secret; set it in the environment \
                 (e.g. AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY), not in a file"
            ),
        });
    }
    Ok(url)
}

/// The URL of `uri`: local paths become absolute `file://` URLs; every URL
/// ends with `/`, so that joining a child keeps the whole path.
fn location_url(uri: &str) -> Result<Url> {
    let trimmed = uri.trim();
    if trimmed.is_empty() {
        return Err(Error::Storage {
            location: String::new(),
            message: "the location is empty".to_string(),
        });
    }
    let mut url = match Url::parse(trimmed) {
        Ok(url) if is_uri(trimmed) => url,
        _ => {
            let absolute = std::path::absolute(trimmed).map_err(|source| Error::Io {
                path: trimmed.into(),
                source,
            })?;
            Url::from_directory_path(&absolute).map_err(|()| Error::Storage {
                location: absolute.display().to_string(),
                message: "not a valid directory path".to_string(),
            })?
        }
    };
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The object-store schemes deltalake is taught to commit to (its default
/// log store: commits by conditional put).
const REMOTE_SCHEMES: [&str; 8] = ["s3", "s3a", "az", "azure", "abfs", "abfss", "adl", "gs"];

/// Teaches deltalake (built without its cloud features, which would pull
/// in a second set of cloud clients) to commit to tables on object
/// storage: the store itself is always aurum's ([`StorageLocation`]),
/// handed to deltalake with the table; this registers the log store that
/// writes each commit with a conditional put. Idempotent.
pub(crate) fn register_log_stores() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let registry = deltalake::logstore::logstore_factories();
        for scheme in REMOTE_SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                registry.insert(url, Arc::new(ConditionalPutLogStores));
            }
        }
    });
}

/// deltalake's default log store for object storage.
struct ConditionalPutLogStores;

impl deltalake::logstore::LogStoreFactory for ConditionalPutLogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Whether `text` is a URI rather than a local path (a one-letter scheme
/// is a Windows drive, not a URI).
pub fn is_uri(text: &str) -> bool {
    Url::parse(text).is_ok_and(|url| url.scheme().len() > 1)
}

fn build_store(url: &Url, options: &BTreeMap<String, String>) -> Result<Arc<DynObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

    let location = redacted(url);
    let refuse = |message: String| Error::Storage {
        location: location.clone(),
        message,
    };
    let bad_option = |key: &str| refuse(format!("unknown storage option {key:?} for this scheme"));
    let built = |e: object_store::Error| refuse(e.to_string());
    let store: Arc<DynObjectStore> = match url.scheme() {
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key.parse().map_err(|_| bad_option(key))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(built)?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (key, value) in options {
                let key: AzureConfigKey = key.parse().map_err(|_| bad_option(key))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(built)?)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, value) in options {
                let key: GoogleConfigKey = key.parse().map_err(|_| bad_option(key))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(built)?)
        }
        other => {
            return Err(refuse(format!(
                "unsupported scheme {other:?} (use a local path, file://, s3://, az://, \
                 abfss:// or gs://)"
            )));
        }
    };
    Ok(store)
}

/// Whether a storage option key names a secret (which must come from the
/// environment, never from a file).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "access_key",
        "account_key",
        "master_key",
        "token",
        "sas",
        "password",
        "service_account_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `url` without password, query or fragment: what logs and errors show.
/// The user name stays: in `abfss://container@account…` it is the
/// container.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_directory_urls() {
        let location = StorageLocation::parse("some/dir", &BTreeMap::new()).unwrap();
        assert_eq!(location.url().scheme(), "file");
        assert!(location.url().path().ends_with("/some/dir/"));
        assert!(location.is_local());
    }

    #[test]
    fn secrets_in_options_are_refused_without_echoing_them() {
        let mut options = BTreeMap::new();
        options.insert(
            "aws_secret_access_key".to_string(),
            "hunter2-very-secret".to_string(),
        );
        let error = StorageLocation::parse("s3://bucket/prefix", &options).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("aws_secret_access_key"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn passwords_and_queries_are_not_shown_but_the_container_is() {
        let url = Url::parse("abfss://lake:pw@account.dfs.core.windows.net/path/?sig=abc").unwrap();
        let shown = redacted(&url);
        assert!(!shown.contains("pw"), "{shown}");
        assert!(!shown.contains("sig"), "{shown}");
        assert!(shown.starts_with("abfss://lake@account"), "{shown}");
    }

    #[test]
    fn a_secret_in_the_uri_is_refused_without_echoing_it() {
        for uri in [
            "s3://key:hunter2@bucket/prefix",
            "az://container/prefix?sig=hunter2",
        ] {
            let error = StorageLocation::parse(uri, &BTreeMap::new()).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("credentials come from the environment"),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
            assert!(StorageLocation::check(uri, &BTreeMap::new()).is_err());
        }
    }

    #[test]
    fn unknown_schemes_are_named() {
        let error = StorageLocation::parse("ftp://host/x", &BTreeMap::new()).unwrap_err();
        assert!(error.to_string().contains("\"ftp\""), "{error}");
    }
}
