//! Listing, reading and deleting objects by path relative to the storage
//! root, and a view of the store that hides chosen files from listings.
//!
//! The hiding view is how a multi-file change becomes atomic for readers:
//! tracking compaction writes a merged file whose record names the files it
//! replaces, and readers list through a view that hides those inputs once
//! the merged file exists (see `tracking::compact`). DataFusion's listing
//! tables only ever list, so hiding a file from `list` hides it from SQL.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::{Storage, StorageError, StorageOp};
use crate::error::Result;

/// An object found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the storage root (`tracking/params/x.parquet`).
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Last write.
    pub last_modified: DateTime<Utc>,
}

impl Storage {
    /// Relative path of an object path under the root.
    fn relative(&self, p: &ObjPath) -> String {
        let root = self.root.as_ref();
        let full = p.as_ref();
        if root.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(root)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string())
        }
    }

    /// An object as [`Storage::list`] reports it.
    fn listed(&self, m: &ObjectMeta) -> Listed {
        Listed {
            rel: self.relative(&m.location),
            size: m.size,
            last_modified: m.last_modified,
        }
    }

    /// Every object under the folder `rel` (recursively), in no set order.
    /// A folder that does not exist lists as empty. The listing is one
    /// attempt: a transient failure part-way lists again from the start.
    pub async fn list(&self, rel: &str) -> Result<Vec<Listed>> {
        let prefix = self.path(rel);
        let metas: Vec<ObjectMeta> = match self
            .retry
            .run(StorageOp::List, &prefix, || {
                self.store.list(Some(&prefix)).try_collect()
            })
            .await
        {
            Ok(m) => m,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(metas.into_iter().map(|m| self.listed(&m)).collect())
    }

    /// The size and time of `rel`, or `None` when it does not exist.
    pub(crate) async fn head(&self, rel: &str) -> Result<Option<Listed>> {
        let path = self.path(rel);
        match self
            .retry
            .run(StorageOp::Head, &path, || self.store.head(&path))
            .await
        {
            Ok(m) => Ok(Some(self.listed(&m))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `rel`; an object that is already gone is not an error (a
    /// concurrent cleaner may have deleted it).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match self
            .retry
            .run(StorageOp::Delete, &path, || self.store.delete(&path))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every path in `rels`, up to 32 at a time, each as by
    /// [`Storage::delete`].
    pub async fn delete_all(&self, rels: &[String]) -> Result<()> {
        // Futures collected first: a closure inside the stream would make
        // callers' futures fail `Send` (a known rustc limitation).
        let deletes: Vec<_> = rels.iter().map(|r| self.delete(r)).collect();
        futures::stream::iter(deletes)
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Reads `rel`, which must exist (a missing object is a
    /// [`StorageError::Failed`] with object_store's `NotFound`).
    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        Ok(self.get_bytes(rel).await?)
    }

    /// The same storage, except that each listing leaves out the objects
    /// `filter` names for it (reads, writes and deletes are unchanged). The
    /// filter is asked after the objects are listed, at every listing the
    /// store serves. (DataFusion caches a table's listing for the life of a
    /// session, so a session sees the files as of its first scan: open a new
    /// one for each command, as mlwatch does.)
    pub fn filtered(&self, filter: Arc<dyn ListFilter>) -> Storage {
        Storage {
            store: Arc::new(HidingStore {
                inner: self.clone(),
                filter,
            }),
            base_url: self.base_url.clone(),
            root: self.root.clone(),
            retry: self.retry,
        }
    }
}

/// Decides which listed objects a [`Storage::filtered`] view hides.
pub trait ListFilter: std::fmt::Debug + Send + Sync + 'static {
    /// The relative paths among `listed` to leave out.
    fn hidden<'a>(&'a self, listed: &'a [Listed]) -> BoxFuture<'a, Result<HashSet<String>>>;
}

/// An object store whose listings leave out what a [`ListFilter`] says.
#[derive(Debug)]
struct HidingStore {
    inner: Storage,
    filter: Arc<dyn ListFilter>,
}

impl std::fmt::Display for HidingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (filtered listings)", self.inner.store)
    }
}

/// A filter's error as the store's: a final storage error as what the store
/// said, anything else (retries that ran out included, which the retry
/// policy then does not retry again) wrapped as `Generic`.
fn to_store_error(e: crate::Error) -> object_store::Error {
    match e {
        crate::Error::ObjectStore(e)
        | crate::Error::Storage(StorageError::Failed { source: e, .. }) => e,
        other => object_store::Error::Generic {
            store: "mlwatch list filter",
            source: Box::new(other),
        },
    }
}

#[async_trait]
impl ObjectStore for HidingStore {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.store.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.store.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.store.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.store.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let filter = self.filter.clone();
        let listing = self.inner.store.list(prefix);
        futures::stream::once(async move {
            let metas: Vec<ObjectMeta> = listing.try_collect().await?;
            let listed: Vec<Listed> = metas.iter().map(|m| inner.listed(m)).collect();
            let hidden = filter.hidden(&listed).await.map_err(to_store_error)?;
            let kept: Vec<object_store::Result<ObjectMeta>> = metas
                .into_iter()
                .zip(listed)
                .filter(|(_, l)| !hidden.contains(&l.rel))
                .map(|(m, _)| Ok(m))
                .collect();
            Ok::<_, object_store::Error>(futures::stream::iter(kept))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<ListResult> {
        let mut out = self.inner.store.list_with_delimiter(prefix).await?;
        let listed: Vec<Listed> = out.objects.iter().map(|m| self.inner.listed(m)).collect();
        let hidden = self.filter.hidden(&listed).await.map_err(to_store_error)?;
        out.objects
            .retain(|m| !hidden.contains(&self.inner.relative(&m.location)));
        Ok(out)
    }

    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.store.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hides `b.parquet` whenever `c.parquet` is listed beside it.
    #[derive(Debug)]
    struct HideB;

    impl ListFilter for HideB {
        fn hidden<'a>(&'a self, listed: &'a [Listed]) -> BoxFuture<'a, Result<HashSet<String>>> {
            Box::pin(async move {
                let c = listed.iter().any(|l| l.rel == "t/c.parquet");
                Ok(listed
                    .iter()
                    .filter(|l| c && l.rel == "t/b.parquet")
                    .map(|l| l.rel.clone())
                    .collect())
            })
        }
    }

    #[tokio::test]
    async fn hidden_objects_are_left_out_of_listings_only() -> Result<()> {
        let s = Storage::open("memory:///root", &Default::default())?;
        for name in ["t/a.parquet", "t/b.parquet"] {
            s.put(name, Bytes::from_static(b"x")).await?;
        }
        let view = s.filtered(Arc::new(HideB));
        // Decided at each listing: b is hidden only once c exists.
        assert_eq!(view.list("t").await?.len(), 2);
        s.put("t/c.parquet", Bytes::from_static(b"x")).await?;
        let mut names: Vec<String> = view.list("t").await?.into_iter().map(|l| l.rel).collect();
        names.sort();
        assert_eq!(names, ["t/a.parquet", "t/c.parquet"]);
        // Still readable by name, and the original storage lists it.
        assert_eq!(view.get("t/b.parquet").await?, Bytes::from_static(b"x"));
        assert_eq!(s.list("t").await?.len(), 3);
        assert!(s.list("missing").await?.is_empty());
        s.delete("t/a.parquet").await?;
        s.delete("t/a.parquet").await?;
        assert_eq!(s.list("t").await?.len(), 2);
        Ok(())
    }
}
