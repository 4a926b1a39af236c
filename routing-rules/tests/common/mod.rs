//! Helpers shared by the integration tests: rules written as TOML, compiled as the proxy does.

// Test support: a failed assumption here is a failed test or a fuzzer finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use routing_rules::spec::{DestinationSpec, GroupSpec, RouteSpec};
use routing_rules::{DestId, Router, RuleError};
use serde::Deserialize;

/// The rule sections of a config file; other sections (listen, node, ...) are ignored.
#[derive(Deserialize)]
pub struct Doc {
    #[serde(default)]
    pub destination: Vec<DestinationSpec>,
    #[serde(default)]
    pub group: Vec<GroupSpec>,
    #[serde(default)]
    pub route: Vec<RouteSpec>,
}

pub fn try_compile(toml_text: &str) -> Result<Router, Vec<RuleError>> {
    let doc: Doc = toml::from_str(toml_text).expect("test TOML deserialises");
    Router::compile(&doc.destination, &doc.group, &doc.route)
}

#[track_caller]
pub fn compile(toml_text: &str) -> Router {
    match try_compile(toml_text) {
        Ok(r) => r,
        Err(errs) => panic!("compile failed: {errs:#?}"),
    }
}

#[track_caller]
pub fn errors(toml_text: &str) -> Vec<RuleError> {
    try_compile(toml_text).expect_err("compile must fail")
}

/// Asserts exactly one error, at `path`, whose message contains `phrase`.
#[track_caller]
pub fn assert_one_error(toml_text: &str, path: &str, phrase: &str) {
    let errs = errors(toml_text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert_eq!(errs[0].path, path, "{errs:#?}");
    assert!(
        errs[0].message.contains(phrase),
        "message {:?} lacks {phrase:?}",
        errs[0].message
    );
}

/// `n` destinations `d0`..`d{n-1}` on 127.0.0.1:5100+i.
pub fn destinations(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[destination]]\nname = \"d{i}\"\naddress = \"127.0.0.1:{}\"\n",
                5100 + i
            )
        })
        .collect()
}

pub fn names(router: &Router, ids: impl IntoIterator<Item = DestId>) -> Vec<String> {
    ids.into_iter()
        .map(|d| router.destination(d).name.clone())
        .collect()
}
