//! Cloudflare's account-level IP lists (the Lists API), through the shared [`Api`] client.
//!
//! Replacing the items is one `PUT .../items`, which Cloudflare applies asynchronously as a bulk
//! operation; its status is polled until `completed` (or `failed`, which is an error).

use crate::error::{Classify, Kind};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::remote::cloudflare::{Api, ApiError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct List {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub num_items: u64,
}

/// The list a command keeps, among the account's lists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    pub list: Option<List>,
    /// Items in the account's other custom lists (IP, hostname, ASN), which share the account's
    /// item limit with this one. Bulk Redirect lists have limits of their own and are left out.
    pub other_items: u64,
}

impl Found {
    /// Picks `name` out of the account's `lists`; a list of that name that is not an IP list is
    /// an error.
    pub(crate) fn among(lists: Vec<List>, name: &str) -> Result<Found, ListError> {
        let mut found = Found {
            list: None,
            other_items: 0,
        };
        for list in lists {
            if list.name == name {
                if list.kind != "ip" {
                    return Err(ListError::WrongKind {
                        name: list.name,
                        kind: list.kind,
                    });
                }
                found.list = Some(list);
            } else if list.kind != "redirect" {
                found.other_items += list.num_items;
            }
        }
        Ok(found)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Item {
    #[serde(default)]
    ip: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Operation {
    operation_id: String,
}

#[derive(Debug, Deserialize)]
struct OperationStatus {
    status: String,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ListError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the list {name} is of kind {kind}, not ip")]
    WrongKind { name: String, kind: String },
    #[error("Cloudflare's bulk operation {id} on list {name} failed: {error}")]
    OperationFailed {
        id: String,
        name: String,
        error: String,
    },
    #[error("Cloudflare's bulk operation {id} on list {name} did not finish within {secs} s")]
    OperationTimedOut { id: String, name: String, secs: u64 },
}

impl Classify for ListError {
    fn kind(&self) -> Kind {
        match self {
            ListError::Api(e) => e.kind(),
            ListError::WrongKind { .. } => Kind::BadInput,
            ListError::OperationFailed { .. } | ListError::OperationTimedOut { .. } => Kind::Failed,
        }
    }
}

pub(crate) struct Lists {
    api: Api,
    /// How long to wait for a bulk operation.
    pub operation_deadline: Duration,
}

impl Lists {
    pub(crate) fn new(api: Api) -> Self {
        Lists {
            api,
            operation_deadline: Duration::from_secs(300),
        }
    }

    /// The IP list called `name`, if there is one, and the items of the account's other lists.
    pub(crate) async fn find(&self, name: &str) -> Result<Found, ListError> {
        let lists: Vec<List> = self
            .api
            .result(
                Method::GET,
                &self.api.account_path("rules/lists"),
                None,
                "listing IP lists",
            )
            .await?;
        Found::among(lists, name)
    }

    pub(crate) async fn create(&self, name: &str, description: &str) -> Result<List, ListError> {
        Ok(self
            .api
            .result(
                Method::POST,
                &self.api.account_path("rules/lists"),
                Some(&json!({"name": name, "kind": "ip", "description": description})),
                "creating the IP list",
            )
            .await?)
    }

    /// Every item's address range, following the cursor pages.
    pub(crate) async fn items(&self, list: &List) -> Result<Vec<String>, ListError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = self
                .api
                .account_path(&format!("rules/lists/{}/items?per_page=500", list.id));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let envelope = self
                .api
                .call::<Vec<Item>>(Method::GET, &path, None, "reading the IP list's items")
                .await?;
            out.extend(
                envelope
                    .result
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.ip),
            );
            cursor = envelope
                .result_info
                .as_ref()
                .and_then(|i| i["cursors"]["after"].as_str())
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }

    /// Replaces every item of `list` with `ranges` and waits for Cloudflare to finish.
    pub(crate) async fn replace(
        &self,
        list: &List,
        ranges: &[String],
        comment: &str,
    ) -> Result<(), ListError> {
        let body = Value::Array(
            ranges
                .iter()
                .map(|r| json!({"ip": r, "comment": comment}))
                .collect(),
        );
        let operation: Operation = self
            .api
            .result(
                Method::PUT,
                &self
                    .api
                    .account_path(&format!("rules/lists/{}/items", list.id)),
                Some(&body),
                "replacing the IP list's items",
            )
            .await?;
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let status: OperationStatus = self
                .api
                .result(
                    Method::GET,
                    &self.api.account_path(&format!(
                        "rules/lists/bulk_operations/{}",
                        operation.operation_id
                    )),
                    None,
                    "polling the bulk operation",
                )
                .await?;
            match status.status.as_str() {
                "completed" => return Ok(()),
                "failed" => {
                    return Err(ListError::OperationFailed {
                        id: operation.operation_id,
                        name: list.name.clone(),
                        error: status.error.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                _ if started.elapsed() > self.operation_deadline => {
                    return Err(ListError::OperationTimedOut {
                        id: operation.operation_id,
                        name: list.name.clone(),
                        secs: self.operation_deadline.as_secs(),
                    });
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, kind: &str, num_items: u64) -> List {
        List {
            id: format!("id-{name}"),
            name: name.to_string(),
            kind: kind.to_string(),
            num_items,
        }
    }

    #[test]
    fn the_other_custom_lists_count_against_the_limit() {
        let lists = vec![
            list("github", "ip", 40),
            list("office", "ip", 3),
            list("hosts", "hostname", 7),
            list("asns", "asn", 2),
            list("redirects", "redirect", 500),
        ];
        let found = Found::among(lists.clone(), "github").unwrap();
        assert_eq!(found.list, Some(list("github", "ip", 40)));
        assert_eq!(found.other_items, 12);
        let found = Found::among(lists.clone(), "new").unwrap();
        assert_eq!((found.list, found.other_items), (None, 52));
        assert!(matches!(
            Found::among(lists, "hosts"),
            Err(ListError::WrongKind { .. })
        ));
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        use crate::remote::cloudflare::ApiError;
        let s = String::from;
        let transport = ApiError::Transport {
            what: s("listing"),
            message: s("reset"),
        };
        let cases = [
            (ListError::Api(ApiError::MissingToken("T")), BadInput),
            (ListError::Api(transport), Failed),
            (
                ListError::WrongKind {
                    name: s("l"),
                    kind: s("asn"),
                },
                BadInput,
            ),
            (
                ListError::OperationFailed {
                    id: s("1"),
                    name: s("l"),
                    error: s("x"),
                },
                Failed,
            ),
            (
                ListError::OperationTimedOut {
                    id: s("1"),
                    name: s("l"),
                    secs: 60,
                },
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
