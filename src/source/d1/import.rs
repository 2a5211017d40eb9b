//! A restore into D1 through its import API: the SQL file handed over whole, which D1 applies as
//! one unit, so a failed import leaves the database as it was. Apart from the `/raw` reads: its
//! calls, answers and failures are the import API's own.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::D1Source;
use crate::source::SourceError;

/// An answer of the import API, at any of its steps.
#[derive(Debug, Default, Deserialize)]
struct ImportAnswer {
    success: Option<bool>,
    status: Option<String>,
    at_bookmark: Option<String>,
    upload_url: Option<String>,
    filename: Option<String>,
    error: Option<String>,
    #[serde(default)]
    errors: Vec<Value>,
    result: Option<ImportResult>,
}

/// What a finished import reports.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImportResult {
    #[serde(default)]
    pub num_queries: u64,
    pub final_bookmark: Option<String>,
}

/// A file as a request body, read as it is sent.
fn file_body(path: &std::path::Path) -> reqwest::Body {
    match std::fs::File::open(path) {
        Ok(file) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(file),
        )),
        Err(e) => {
            reqwest::Body::wrap_stream(futures::stream::once(
                async move { Err::<bytes::Bytes, _>(e) },
            ))
        }
    }
}

impl D1Source {
    /// Applies the SQL file at `path` (`size` bytes, MD5 `etag` in hex) through D1's import API:
    /// `init`, `PUT` to the upload URL, `ingest`, then `poll` until D1 says `complete`. D1 applies
    /// the file as one unit, so a failure leaves the database as it was.
    pub async fn import(
        &self,
        path: &std::path::Path,
        size: u64,
        etag: &str,
    ) -> Result<ImportResult, SourceError> {
        let endpoint = self
            .api
            .account_path(&format!("d1/database/{}/import", self.id));
        let call = |body: Value, what: &'static str| {
            let endpoint = endpoint.clone();
            async move {
                self.api
                    .result::<ImportAnswer>(Method::POST, &endpoint, Some(&body), what)
                    .await
            }
        };
        let init = call(
            json!({"action": "init", "etag": etag}),
            "starting the import",
        )
        .await?;
        let mut answer = match (&init.upload_url, &init.filename) {
            (Some(url), Some(filename)) => {
                let uploaded = self
                    .api
                    .put_url(
                        url,
                        size,
                        || file_body(path),
                        "uploading the SQL file for import",
                    )
                    .await?;
                if uploaded.as_deref() != Some(etag) {
                    return Err(SourceError::Other(format!(
                        "the import upload to d1://{} arrived damaged (MD5 {} instead of {etag}); run the restore again",
                        self.name,
                        uploaded.as_deref().unwrap_or("missing")
                    )));
                }
                call(
                    json!({"action": "ingest", "etag": etag, "filename": filename}),
                    "ingesting the import",
                )
                .await?
            }
            // D1 already holds this exact file: it went straight to ingesting.
            _ => init,
        };
        let mut wait = std::time::Duration::from_millis(200);
        loop {
            let failed = answer.success == Some(false) || answer.status.as_deref() == Some("error");
            if failed {
                let mut reasons: Vec<String> = answer.error.iter().cloned().collect();
                reasons.extend(answer.errors.iter().map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }));
                reasons.dedup();
                return Err(SourceError::Other(format!(
                    "D1 refused the import into d1://{}: {} (the database was left as it was)",
                    self.name,
                    reasons.join("; ")
                )));
            }
            if answer.status.as_deref() == Some("complete") {
                return Ok(answer.result.unwrap_or_default());
            }
            let Some(bookmark) = answer.at_bookmark.clone() else {
                return Err(SourceError::Other(
                    "D1's import answer has neither a status nor a bookmark to poll".to_string(),
                ));
            };
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
            answer = call(
                json!({"action": "poll", "current_bookmark": bookmark}),
                "polling the import",
            )
            .await?;
        }
    }
}
