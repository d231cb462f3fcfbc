//! The one retry policy of every storage operation, and the error it reports.
//!
//! Every call that [`Storage`](super::Storage) makes to its object store
//! (list, head, get, put, put-if-absent, delete) goes through
//! `RetryPolicy::run`, which sorts object_store's errors in two:
//!
//! - **final**, returned at once: `NotFound`, `AlreadyExists`,
//!   `Precondition`, `NotModified`, `InvalidPath`, `PermissionDenied`,
//!   `Unauthenticated`, `NotImplemented`, `NotSupported`,
//!   `UnknownConfigurationKey`, `JoinError` (a panicked blocking task), any
//!   variant object_store adds later, a `Generic` error caused by a local
//!   I/O error that waiting cannot cure (permission denied, read-only file
//!   system, not a folder, ...), and an error that already went through this
//!   policy (a filtered listing whose filter read the store), so retries are
//!   never nested;
//! - **transient**, retried: every other `Generic` error. object_store's HTTP
//!   client has already turned 404, 304, 409, 412, 401 and 403 answers into
//!   the variants above, so what is left is I/O errors, timeouts, dropped
//!   connections, 5xx answers and bodies cut off while being read.
//!
//! Retries use capped exponential backoff: `RetryPolicy::DEFAULT` makes
//! 5 attempts, waiting 100 ms, 200 ms, 400 ms and 800 ms between them (each
//! wait doubles up to 2 s), so about 1.5 s before a transient failure is
//! reported as [`StorageError::Exhausted`] with the operation and the path.
//! Each retry is logged at `warn` with the same fields. On S3 this comes on
//! top of object_store's own per-request retries (5xx and timeouts); ours
//! also cover local disks and failures while a response body is read.
//!
//! Callers decide what a final error means: `get_opt` reads `NotFound` as
//! "absent", `delete` as "already gone", `list` as "empty";
//! `put_if_absent` reads `AlreadyExists` and `Precondition` as "taken".

use std::future::Future;
use std::time::Duration;

use object_store::path::Path as ObjPath;

/// A storage operation, as errors and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// Listing a folder.
    List,
    /// Reading an object's size and time.
    Head,
    /// Reading an object.
    Get,
    /// Writing an object (replacing any).
    Put,
    /// Creating an object only if none is there.
    PutIfAbsent,
    /// Deleting an object.
    Delete,
}

impl std::fmt::Display for StorageOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageOp::List => "list",
            StorageOp::Head => "head",
            StorageOp::Get => "get",
            StorageOp::Put => "put",
            StorageOp::PutIfAbsent => "put-if-absent",
            StorageOp::Delete => "delete",
        })
    }
}

/// A storage operation that failed, with the object path it was about.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A final error (see the module docs): not retried.
    #[error("{op} `{path}`: {source}")]
    Failed {
        /// The operation.
        op: StorageOp,
        /// Object path in the store (the storage root included).
        path: String,
        /// What the store said.
        source: object_store::Error,
    },
    /// A transient error that lasted through every attempt.
    #[error("{op} `{path}`: still failing after {attempts} attempts: {source}")]
    Exhausted {
        /// The operation.
        op: StorageOp,
        /// Object path in the store (the storage root included).
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        source: object_store::Error,
    },
}

impl StorageError {
    /// The store's own error.
    pub fn store_error(&self) -> &object_store::Error {
        match self {
            StorageError::Failed { source, .. } | StorageError::Exhausted { source, .. } => source,
        }
    }

    /// Whether this is a final `NotFound`.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            StorageError::Failed {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// Whether this is a final "an object is already there".
    pub(crate) fn is_taken(&self) -> bool {
        matches!(
            self,
            StorageError::Failed {
                source: object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ..
            }
        )
    }
}

/// How many times, and how far apart, transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub(crate) attempts: u32,
    /// Wait before the second attempt; each later wait doubles.
    pub(crate) first_delay: Duration,
    /// Longest wait.
    pub(crate) max_delay: Duration,
}

impl RetryPolicy {
    /// 5 attempts, 100 ms doubling up to 2 s between them.
    pub(crate) const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    };

    /// The wait after failed attempt `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Runs `attempt` until it succeeds, fails finally, or has been tried
    /// [`RetryPolicy::attempts`] times.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        op: StorageOp,
        path: &ObjPath,
        mut attempt: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let attempts = self.attempts.max(1);
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(source) if !is_transient(&source) => {
                    return Err(StorageError::Failed {
                        op,
                        path: path.to_string(),
                        source,
                    });
                }
                Err(source) if n >= attempts => {
                    return Err(StorageError::Exhausted {
                        op,
                        path: path.to_string(),
                        attempts: n,
                        source,
                    });
                }
                Err(error) => {
                    let delay = self.delay(n);
                    tracing::warn!(%op, path = %path, attempt = n, ?delay, %error, "storage operation failed; retrying");
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
            }
        }
    }
}

/// Whether waiting and trying again may cure `e` (see the module docs).
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::Generic { source, .. } => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if c.is::<StorageError>() {
                    return false;
                }
                if let Some(io) = c.downcast_ref::<std::io::Error>() {
                    use std::io::ErrorKind as K;
                    if matches!(
                        io.kind(),
                        K::PermissionDenied
                            | K::ReadOnlyFilesystem
                            | K::NotADirectory
                            | K::IsADirectory
                            | K::InvalidInput
                            | K::InvalidFilename
                            | K::Unsupported
                    ) {
                        return false;
                    }
                }
                cause = c.source();
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: Box::new(source),
        }
    }

    #[test]
    fn errors_are_sorted_into_final_and_transient() {
        let io = |kind| generic(std::io::Error::new(kind, "x"));
        assert!(is_transient(&io(std::io::ErrorKind::TimedOut)));
        assert!(is_transient(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!is_transient(&io(std::io::ErrorKind::PermissionDenied)));
        let path = || "p".to_string();
        let boxed = || Box::new(std::io::Error::other("x")) as _;
        for e in [
            object_store::Error::NotFound {
                path: path(),
                source: boxed(),
            },
            object_store::Error::AlreadyExists {
                path: path(),
                source: boxed(),
            },
            object_store::Error::Precondition {
                path: path(),
                source: boxed(),
            },
            object_store::Error::NotModified {
                path: path(),
                source: boxed(),
            },
            object_store::Error::PermissionDenied {
                path: path(),
                source: boxed(),
            },
            object_store::Error::Unauthenticated {
                path: path(),
                source: boxed(),
            },
            object_store::Error::NotImplemented {
                operation: "copy".into(),
                implementer: "test".into(),
            },
            object_store::Error::InvalidPath {
                source: object_store::path::Error::EmptySegment { path: path() },
            },
        ] {
            assert!(!is_transient(&e), "{e}");
        }
        // Already retried once: not again.
        let inner = StorageError::Exhausted {
            op: StorageOp::List,
            path: path(),
            attempts: 5,
            source: io(std::io::ErrorKind::TimedOut),
        };
        assert!(!is_transient(&generic(inner)));
    }

    mod injected {
        //! Storage over an in-memory store that fails on cue, to check which
        //! failures each operation retries.

        use std::collections::{HashMap, VecDeque};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use async_trait::async_trait;
        use bytes::Bytes;
        use futures::StreamExt;
        use futures::stream::BoxStream;
        use object_store::memory::InMemory;
        use object_store::path::Path as ObjPath;
        use object_store::{
            CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
            ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
        };

        use super::super::{RetryPolicy, StorageError, StorageOp};
        use crate::error::{Error, Result};
        use crate::storage::Storage;

        /// What the next call of an operation does instead of (or after)
        /// reaching the store.
        #[derive(Debug, Clone, Copy)]
        enum Fault {
            /// Fails with a transient error without reaching the store.
            Transient,
            /// Fails with `PermissionDenied` without reaching the store.
            Denied,
            /// Reaches the store, then fails transiently (a lost response).
            Lost,
        }

        #[derive(Debug, Default)]
        struct Faults {
            script: Mutex<HashMap<&'static str, VecDeque<Fault>>>,
            calls: Mutex<HashMap<&'static str, u32>>,
        }

        impl Faults {
            fn plan(&self, op: &'static str, faults: &[Fault]) {
                self.script
                    .lock()
                    .unwrap()
                    .insert(op, faults.iter().copied().collect());
            }

            /// Calls of `op` since the last look.
            fn calls(&self, op: &'static str) -> u32 {
                self.calls.lock().unwrap().remove(op).unwrap_or(0)
            }

            fn next(&self, op: &'static str) -> Option<Fault> {
                *self.calls.lock().unwrap().entry(op).or_default() += 1;
                self.script.lock().unwrap().get_mut(op)?.pop_front()
            }
        }

        fn transient() -> object_store::Error {
            object_store::Error::Generic {
                store: "flaky",
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected: connection reset",
                )),
            }
        }

        fn denied(path: &ObjPath) -> object_store::Error {
            object_store::Error::PermissionDenied {
                path: path.to_string(),
                source: "injected: access denied".into(),
            }
        }

        #[derive(Debug)]
        struct FlakyStore {
            inner: InMemory,
            faults: Arc<Faults>,
        }

        impl std::fmt::Display for FlakyStore {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "FlakyStore({})", self.inner)
            }
        }

        impl FlakyStore {
            /// The injected error before reaching the store, if any; the
            /// fault to apply after it otherwise.
            fn before(&self, op: &'static str, path: &ObjPath) -> object_store::Result<bool> {
                match self.faults.next(op) {
                    None => Ok(false),
                    Some(Fault::Transient) => Err(transient()),
                    Some(Fault::Denied) => Err(denied(path)),
                    Some(Fault::Lost) => Ok(true),
                }
            }
        }

        #[async_trait]
        impl ObjectStore for FlakyStore {
            async fn put_opts(
                &self,
                location: &ObjPath,
                payload: PutPayload,
                opts: PutOptions,
            ) -> object_store::Result<PutResult> {
                let lost = self.before("put", location)?;
                let r = self.inner.put_opts(location, payload, opts).await?;
                if lost { Err(transient()) } else { Ok(r) }
            }

            async fn put_multipart_opts(
                &self,
                location: &ObjPath,
                opts: PutMultipartOptions,
            ) -> object_store::Result<Box<dyn MultipartUpload>> {
                self.inner.put_multipart_opts(location, opts).await
            }

            async fn get_opts(
                &self,
                location: &ObjPath,
                options: GetOptions,
            ) -> object_store::Result<GetResult> {
                let op = if options.head { "head" } else { "get" };
                let lost = self.before(op, location)?;
                let r = self.inner.get_opts(location, options).await?;
                if lost { Err(transient()) } else { Ok(r) }
            }

            fn delete_stream(
                &self,
                locations: BoxStream<'static, object_store::Result<ObjPath>>,
            ) -> BoxStream<'static, object_store::Result<ObjPath>> {
                let faults = self.faults.clone();
                let inner = self.inner.clone();
                locations
                    .then(move |p| {
                        let faults = faults.clone();
                        let inner = inner.clone();
                        async move {
                            let p = p?;
                            match faults.next("delete") {
                                Some(Fault::Transient) => return Err(transient()),
                                Some(Fault::Denied) => return Err(denied(&p)),
                                _ => {}
                            }
                            let mut done =
                                inner.delete_stream(futures::stream::iter([Ok(p)]).boxed());
                            done.next().await.unwrap_or_else(|| Err(transient()))
                        }
                    })
                    .boxed()
            }

            fn list(
                &self,
                prefix: Option<&ObjPath>,
            ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
                match self.faults.next("list") {
                    Some(Fault::Transient) => {
                        // Fails part-way: one entry, then the error.
                        let first = self.inner.list(prefix).take(1);
                        first
                            .chain(futures::stream::iter([Err(transient())]))
                            .boxed()
                    }
                    Some(Fault::Denied) => {
                        let p = prefix.cloned().unwrap_or_default();
                        futures::stream::iter([Err(denied(&p))]).boxed()
                    }
                    _ => self.inner.list(prefix),
                }
            }

            async fn list_with_delimiter(
                &self,
                prefix: Option<&ObjPath>,
            ) -> object_store::Result<ListResult> {
                self.inner.list_with_delimiter(prefix).await
            }

            async fn copy_opts(
                &self,
                from: &ObjPath,
                to: &ObjPath,
                options: CopyOptions,
            ) -> object_store::Result<()> {
                self.inner.copy_opts(from, to, options).await
            }
        }

        fn flaky() -> (Storage, Arc<Faults>) {
            let faults = Arc::new(Faults::default());
            let storage = Storage {
                store: Arc::new(FlakyStore {
                    inner: InMemory::new(),
                    faults: faults.clone(),
                }),
                base_url: url::Url::parse("memory:///").unwrap(),
                root: ObjPath::from("root"),
                retry: RetryPolicy {
                    attempts: 4,
                    first_delay: Duration::from_millis(1),
                    max_delay: Duration::from_millis(4),
                },
            };
            (storage, faults)
        }

        use Fault::{Denied, Lost, Transient};

        #[tokio::test]
        async fn transient_failures_are_retried_until_they_pass() -> Result<()> {
            let (s, f) = flaky();
            let x = Bytes::from_static(b"x");
            f.plan("put", &[Transient, Transient]);
            s.put("t/a", x.clone()).await?;
            assert_eq!(f.calls("put"), 3);
            // A lost response: the retry overwrites with the same bytes.
            f.plan("put", &[Lost]);
            s.put("t/b", x.clone()).await?;
            assert_eq!(f.calls("put"), 2);
            let batch = datafusion::arrow::array::RecordBatch::try_from_iter([(
                "v",
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![1])) as _,
            )])?;
            f.plan("put", &[Transient]);
            s.write_parquet("p/v.parquet", &[batch]).await?;
            assert_eq!(f.calls("put"), 2);
            f.plan("get", &[Transient, Lost]);
            assert_eq!(s.get("t/a").await?, x);
            assert_eq!(f.calls("get"), 3);
            f.plan("get", &[Transient]);
            assert_eq!(s.get_opt("t/b").await?, Some(x.clone()));
            assert_eq!(f.calls("get"), 2);
            f.plan("head", &[Transient]);
            assert_eq!(s.head("t/a").await?.map(|l| l.size), Some(1));
            assert_eq!(f.calls("head"), 2);
            // A listing cut off part-way is listed again from the start.
            f.plan("list", &[Transient, Transient, Transient]);
            let mut names: Vec<String> = s.list("t").await?.into_iter().map(|l| l.rel).collect();
            names.sort();
            assert_eq!(names, ["t/a", "t/b"]);
            assert_eq!(f.calls("list"), 4);
            f.plan("delete", &[Transient]);
            s.delete_all(&["t/a".to_string()]).await?;
            assert_eq!(f.calls("delete"), 2);
            assert_eq!(s.get_opt("t/a").await?, None);
            f.calls("get");
            // A create whose response was lost is found to be ours.
            f.plan("put", &[Lost]);
            assert!(s.put_if_absent("t/c", x.clone()).await?);
            assert_eq!(f.calls("put"), 2);
            assert_eq!(s.get("t/c").await?, x);
            Ok(())
        }

        #[tokio::test]
        async fn final_failures_are_not_retried() -> Result<()> {
            let (s, f) = flaky();
            let x = Bytes::from_static(b"x");
            f.plan("put", &[Denied]);
            let e = s.put("t/a", x.clone()).await.unwrap_err();
            assert!(
                matches!(&e, Error::Storage(StorageError::Failed { op: StorageOp::Put, path, source: object_store::Error::PermissionDenied { .. } }) if path == "root/t/a"),
                "{e}"
            );
            assert_eq!(f.calls("put"), 1);
            // NotFound as each caller expects it, after one call each.
            assert_eq!(s.get_opt("t/a").await?, None);
            assert_eq!(f.calls("get"), 1);
            assert!(s.head("t/a").await?.is_none());
            assert_eq!(f.calls("head"), 1);
            s.delete("t/a").await?;
            assert_eq!(f.calls("delete"), 1);
            assert!(s.list("t").await?.is_empty());
            assert_eq!(f.calls("list"), 1);
            let e = s.get("t/a").await.unwrap_err();
            assert!(matches!(&e, Error::Storage(e) if e.is_not_found()), "{e}");
            assert_eq!(f.calls("get"), 1);
            // Taken at the first try: another writer's, not read back.
            s.put("t/b", Bytes::from_static(b"theirs")).await?;
            f.calls("put");
            assert!(!s.put_if_absent("t/b", x.clone()).await?);
            assert_eq!((f.calls("put"), f.calls("get")), (1, 0));
            // Taken after a transient failure: read back, and not ours.
            f.plan("put", &[Transient]);
            assert!(!s.put_if_absent("t/b", x.clone()).await?);
            assert_eq!((f.calls("put"), f.calls("get")), (2, 1));
            f.plan("list", &[Denied]);
            assert!(s.list("t").await.is_err());
            assert_eq!(f.calls("list"), 1);
            Ok(())
        }

        #[tokio::test]
        async fn exhausted_retries_report_the_operation_and_path() -> Result<()> {
            let (s, f) = flaky();
            f.plan("put", &[Transient; 4]);
            let e = s.put("t/a", Bytes::from_static(b"x")).await.unwrap_err();
            assert_eq!(f.calls("put"), 4);
            assert!(
                matches!(&e, Error::Storage(StorageError::Exhausted { op: StorageOp::Put, path, attempts: 4, .. }) if path == "root/t/a"),
                "{e}"
            );
            let text = e.to_string();
            assert!(
                text.contains("put `root/t/a`")
                    && text.contains("after 4 attempts")
                    && text.contains("connection reset"),
                "{text}"
            );
            f.plan("list", &[Transient; 4]);
            let e = s.list("t").await.unwrap_err();
            assert!(
                e.to_string()
                    .contains("list `root/t`: still failing after 4 attempts"),
                "{e}"
            );
            assert_eq!(f.calls("list"), 4);
            Ok(())
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::DEFAULT;
        let ms: Vec<u128> = (1..=7).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.delay(200), p.max_delay);
    }
}
