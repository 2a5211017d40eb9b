//! A fake Cloudflare Lists API (axum, in memory), in the documented v4 shapes: the envelope,
//! lists (`GET`/`POST /accounts/{a}/rules/lists`), items with cursor pagination
//! (`result_info.cursors.after`), replace-all as an asynchronous bulk operation (`PUT .../items`
//! → `operation_id`; the status is `pending` on the first poll, then `completed`, or `failed`
//! for an item Cloudflare would not take), one pending bulk operation per account (429
//! otherwise), the bearer-token check, and a zone's `http_request_firewall_custom` entry point
//! ruleset (Rulesets API: get, create by PUT, add a rule, patch a rule), which refuses a rule
//! naming a list that does not exist. Items keep the `comment` they were given, and return it
//! as Cloudflare does (no `comment` when none was given).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::d1::{ACCOUNT, TOKEN};

#[derive(Debug, Clone)]
pub struct FakeList {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub items: Vec<String>,
    /// Each item's comment, in the order of `items` (`None`: the item was given none).
    pub comments: Vec<Option<String>>,
}

/// A bulk operation: list id, new items and their comments, polls so far, and why it fails, if
/// it does.
type Operation = (String, Vec<(String, Option<String>)>, u32, Option<String>);

#[derive(Default)]
struct Inner {
    lists: Mutex<Vec<FakeList>>,
    operations: Mutex<HashMap<String, Operation>>,
    /// zone -> (entry point ruleset id, rules)
    rulesets: Mutex<HashMap<String, (String, Vec<Value>)>>,
    /// Statuses to answer the next requests with (429 gets `Retry-After: 0`).
    faults: Mutex<Vec<u16>>,
    pub requests: AtomicU64,
    pub writes: AtomicU64,
}

pub struct FakeLists {
    /// The API base, as `CLOUDFLARE_API_BASE_URL`.
    pub url: String,
    inner: Arc<Inner>,
}

impl FakeLists {
    pub async fn start() -> FakeLists {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route(
                "/client/v4/accounts/{account}/rules/lists",
                get(get_lists).post(create_list),
            )
            .route(
                "/client/v4/accounts/{account}/rules/lists/{list}/items",
                get(get_items).put(replace_items),
            )
            .route(
                "/client/v4/accounts/{account}/rules/lists/bulk_operations/{op}",
                get(get_operation),
            )
            .route(
                "/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint",
                get(get_entrypoint).put(put_entrypoint),
            )
            .route(
                "/client/v4/zones/{zone}/rulesets/{ruleset}/rules",
                axum::routing::post(add_rule),
            )
            .route(
                "/client/v4/zones/{zone}/rulesets/{ruleset}/rules/{rule}",
                axum::routing::patch(patch_rule),
            )
            .with_state(inner.clone());
        let addr = super::serve(app).await;
        FakeLists {
            url: format!("http://{addr}/client/v4"),
            inner,
        }
    }

    pub fn add_list(&self, name: &str, kind: &str, items: &[&str]) {
        let mut lists = self.inner.lists.lock().unwrap();
        let id = format!("{:032x}", lists.len() + 1);
        lists.push(FakeList {
            id,
            name: name.to_string(),
            kind: kind.to_string(),
            items: items.iter().map(|s| s.to_string()).collect(),
            comments: vec![None; items.len()],
        });
    }

    pub fn list(&self, name: &str) -> Option<FakeList> {
        self.inner
            .lists
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.name == name)
            .cloned()
    }

    /// Answers the next requests with these statuses.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.faults.lock().unwrap().extend(statuses);
    }

    /// The custom rules of a zone's entry point ruleset.
    pub fn rules(&self, zone: &str) -> Vec<Value> {
        self.inner
            .rulesets
            .lock()
            .unwrap()
            .get(zone)
            .map(|(_, rules)| rules.clone())
            .unwrap_or_default()
    }

    /// Replace-all operations accepted.
    pub fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::SeqCst)
    }
}

fn envelope(result: Value, info: Option<Value>) -> Response {
    let mut body = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(info) = info {
        body["result_info"] = info;
    }
    axum::Json(body).into_response()
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

/// The checks every request passes: a fault to inject, the token, the account.
fn gate(inner: &Inner, headers: &HeaderMap, account: &str) -> Option<Response> {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut faults = inner.faults.lock().unwrap();
        (!faults.is_empty()).then(|| faults.remove(0))
    };
    if let Some(status) = fault {
        let mut r = error(
            StatusCode::from_u16(status).unwrap(),
            10000 + status as i64,
            "injected",
        );
        if status == 429 {
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
        }
        if status == 403 {
            r = error(
                StatusCode::FORBIDDEN,
                10000,
                "Authentication error: the token lacks Account Filter Lists Edit",
            );
        }
        return Some(r);
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok());
    if token != Some(&format!("Bearer {TOKEN}")) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            10000,
            "Authentication error",
        ));
    }
    if account != ACCOUNT {
        return Some(error(StatusCode::FORBIDDEN, 10000, "Authentication error"));
    }
    None
}

fn list_json(l: &FakeList) -> Value {
    json!({
        "id": l.id, "name": l.name, "kind": l.kind, "description": "",
        "num_items": l.items.len(), "num_referencing_filters": 0,
        "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z",
    })
}

async fn get_lists(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &account) {
        return r;
    }
    let lists: Vec<Value> = inner.lists.lock().unwrap().iter().map(list_json).collect();
    envelope(Value::Array(lists), None)
}

async fn create_list(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &account) {
        return r;
    }
    let (Some(name), Some(kind)) = (body["name"].as_str(), body["kind"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, 10026, "name and kind are required");
    };
    let mut lists = inner.lists.lock().unwrap();
    if lists.iter().any(|l| l.name == name) {
        return error(
            StatusCode::BAD_REQUEST,
            10013,
            "a list with this name already exists",
        );
    }
    let list = FakeList {
        id: format!("{:032x}", lists.len() + 1),
        name: name.to_string(),
        kind: kind.to_string(),
        items: Vec::new(),
        comments: Vec::new(),
    };
    let json = list_json(&list);
    lists.push(list);
    envelope(json, None)
}

async fn get_items(
    State(inner): State<Arc<Inner>>,
    Path((account, list)): Path<(String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &account) {
        return r;
    }
    let lists = inner.lists.lock().unwrap();
    let Some(l) = lists.iter().find(|l| l.id == list) else {
        return error(StatusCode::NOT_FOUND, 10006, "list not found");
    };
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(25);
    let start: usize = params
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = l
        .items
        .iter()
        .zip(&l.comments)
        .skip(start)
        .take(per_page)
        .map(|(ip, comment)| {
            let mut item = json!({"id": format!("item-{ip}"), "ip": ip, "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"});
            if let Some(comment) = comment {
                item["comment"] = json!(comment);
            }
            item
        })
        .collect();
    let next = start + page.len();
    let cursors = if next < l.items.len() {
        json!({"before": start.to_string(), "after": next.to_string()})
    } else {
        json!({"before": start.to_string()})
    };
    envelope(Value::Array(page), Some(json!({"cursors": cursors})))
}

async fn replace_items(
    State(inner): State<Arc<Inner>>,
    Path((account, list)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &account) {
        return r;
    }
    if !inner.lists.lock().unwrap().iter().any(|l| l.id == list) {
        return error(StatusCode::NOT_FOUND, 10006, "list not found");
    }
    let mut operations = inner.operations.lock().unwrap();
    if operations.values().any(|(_, _, polls, _)| *polls < 2) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            10062,
            "there is already a pending bulk operation",
        );
    }
    let Some(items) = body.as_array() else {
        return error(StatusCode::BAD_REQUEST, 10026, "expected an array of items");
    };
    let mut ips = Vec::new();
    let mut failure = None;
    for item in items {
        let ip = item["ip"].as_str().unwrap_or_default().to_string();
        if ip.parse::<ipnet::IpNet>().is_err() && ip.parse::<std::net::IpAddr>().is_err() {
            failure = Some(format!("{ip} is not a valid IP or CIDR"));
        }
        let comment = match &item["comment"] {
            Value::Null => None,
            Value::String(comment) => Some(comment.clone()),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    10026,
                    "an item's comment must be a string",
                );
            }
        };
        ips.push((ip, comment));
    }
    let id = format!("{:032x}", operations.len() + 100);
    operations.insert(id.clone(), (list, ips, 0, failure));
    inner.writes.fetch_add(1, Ordering::SeqCst);
    envelope(json!({"operation_id": id}), None)
}

async fn get_operation(
    State(inner): State<Arc<Inner>>,
    Path((account, op)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &account) {
        return r;
    }
    let mut operations = inner.operations.lock().unwrap();
    let Some((list, ips, polls, failure)) = operations.get_mut(&op) else {
        return error(StatusCode::NOT_FOUND, 10000, "operation not found");
    };
    *polls += 1;
    if *polls == 1 {
        return envelope(json!({"id": op, "status": "pending"}), None);
    }
    if let Some(reason) = failure.clone() {
        return envelope(json!({"id": op, "status": "failed", "error": reason}), None);
    }
    if *polls == 2 {
        let mut lists = inner.lists.lock().unwrap();
        if let Some(l) = lists.iter_mut().find(|l| &l.id == list) {
            l.items = ips.iter().map(|(ip, _)| ip.clone()).collect();
            l.comments = ips.iter().map(|(_, comment)| comment.clone()).collect();
        }
    }
    envelope(
        json!({"id": op, "status": "completed", "completed": "2026-01-01T00:00:01Z"}),
        None,
    )
}

fn ruleset_json(zone: &str, id: &str, rules: &[Value]) -> Value {
    json!({
        "id": id, "name": format!("zone {zone} custom rules"), "kind": "zone",
        "phase": "http_request_firewall_custom", "version": "1", "rules": rules,
    })
}

/// A rule as stored: an id given, and its list references checked.
fn stored_rule(inner: &Inner, rule: &Value, id: String) -> Result<Value, String> {
    let expression = rule["expression"].as_str().unwrap_or_default();
    let lists = inner.lists.lock().unwrap();
    for word in expression.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')) {
        if let Some(name) = word.strip_prefix('$')
            && !lists.iter().any(|l| l.name == name)
        {
            return Err(format!("could not find list '{name}'"));
        }
    }
    let mut stored = rule.clone();
    stored["id"] = json!(id);
    stored["version"] = json!("1");
    Ok(stored)
}

async fn get_entrypoint(
    State(inner): State<Arc<Inner>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, ACCOUNT) {
        return r;
    }
    match inner.rulesets.lock().unwrap().get(&zone) {
        Some((id, rules)) => envelope(ruleset_json(&zone, id, rules), None),
        None => error(
            StatusCode::NOT_FOUND,
            10003,
            "could not find entrypoint ruleset in the http_request_firewall_custom phase",
        ),
    }
}

async fn put_entrypoint(
    State(inner): State<Arc<Inner>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = gate(&inner, &headers, ACCOUNT) {
        return r;
    }
    let mut rules = Vec::new();
    for (i, rule) in body["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match stored_rule(&inner, rule, format!("rule{i}")) {
            Ok(r) => rules.push(r),
            Err(e) => return error(StatusCode::BAD_REQUEST, 20021, &e),
        }
    }
    let id = format!("{:032x}", 7);
    let json = ruleset_json(&zone, &id, &rules);
    inner.rulesets.lock().unwrap().insert(zone, (id, rules));
    envelope(json, None)
}

async fn add_rule(
    State(inner): State<Arc<Inner>>,
    Path((zone, ruleset)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = gate(&inner, &headers, ACCOUNT) {
        return r;
    }
    let count = inner
        .rulesets
        .lock()
        .unwrap()
        .get(&zone)
        .map(|(_, r)| r.len());
    let rule = match stored_rule(&inner, &body, format!("rule{}", count.unwrap_or(0))) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, 20021, &e),
    };
    let mut rulesets = inner.rulesets.lock().unwrap();
    match rulesets.get_mut(&zone) {
        Some((id, rules)) if *id == ruleset => {
            rules.push(rule);
            envelope(ruleset_json(&zone, id, rules), None)
        }
        _ => error(StatusCode::NOT_FOUND, 10003, "ruleset not found"),
    }
}

async fn patch_rule(
    State(inner): State<Arc<Inner>>,
    Path((zone, ruleset, rule_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = gate(&inner, &headers, ACCOUNT) {
        return r;
    }
    let rule = match stored_rule(&inner, &body, rule_id.clone()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, 20021, &e),
    };
    let mut rulesets = inner.rulesets.lock().unwrap();
    match rulesets.get_mut(&zone) {
        Some((id, rules)) if *id == ruleset => {
            match rules.iter_mut().find(|r| r["id"] == json!(rule_id)) {
                Some(slot) => {
                    *slot = rule;
                    envelope(ruleset_json(&zone, id, rules), None)
                }
                None => error(StatusCode::NOT_FOUND, 10003, "rule not found"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, 10003, "ruleset not found"),
    }
}
