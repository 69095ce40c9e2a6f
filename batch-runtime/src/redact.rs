//! Keeping secrets out of `Debug` output, `Display` messages and tracing fields.
//!
//! Every URL the crate prints goes through [`url_str`]: the whole userinfo
//! (user name and password: both carry tokens) becomes `***`, and so do the
//! values of well-known secret query parameters, in the query and in the
//! fragment (OAuth puts tokens there).

use std::fmt;

use reqwest::header::{
    HeaderMap, HeaderName, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE,
};
use reqwest::Url;

/// Placeholder printed where a header value was.
pub(crate) const REDACTED: &str = "<redacted>";

/// Placeholder printed where a URL's userinfo or a secret parameter was.
const HIDDEN: &str = "***";

/// Query parameter names whose values are credentials (compared without
/// regard to case, after percent-decoding).
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "key",
    "signature",
    "sig",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "code",
    "auth",
    "session",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// Name endings that mark a parameter as a credential too (`github_token`,
/// `stripe_secret`, `db_password`, `private_key`).
const SECRET_SUFFIXES: &[&str] = &["_token", "_secret", "_password", "_key", "-token", "-key"];

/// Headers whose values are credentials and are never printed.
pub(crate) fn is_sensitive(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE || name == SET_COOKIE
}

/// The URL, safe to print; see [`url_str`].
pub(crate) fn url(url: &Url) -> String {
    url_str(url.as_str())
}

/// A URL or path given as text, safe to print: the one redaction every
/// printed URL goes through. Works on text that does not parse as a URL
/// too (a relative path, a malformed target), so nothing bypasses it.
pub(crate) fn url_str(raw: &str) -> String {
    let (before_fragment, fragment) = match raw.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (raw, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (before_fragment, None),
    };
    let mut shown = String::with_capacity(raw.len());
    shown.push_str(&without_userinfo(before_query));
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(&params(query));
    }
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(&params(fragment));
    }
    shown
}

/// `scheme://user:pass@host/path` → `scheme://***@host/path`.
fn without_userinfo(head: &str) -> String {
    let Some(scheme_end) = head.find("://") else {
        return head.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = head[authority_start..]
        .find(['/', '\\'])
        .map_or(head.len(), |i| authority_start + i);
    match head[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{HIDDEN}{}",
            &head[..authority_start],
            &head[authority_start + at..]
        ),
        None => head.to_owned(),
    }
}

/// `a=1&token=t` → `a=1&token=***`; pairs keep their order and encoding.
fn params(pairs: &str) -> String {
    let mut shown = String::with_capacity(pairs.len());
    for (i, pair) in pairs.split('&').enumerate() {
        if i > 0 {
            shown.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => {
                shown.push_str(name);
                shown.push('=');
                shown.push_str(HIDDEN);
            }
            _ => shown.push_str(pair),
        }
    }
    shown
}

fn is_secret_param(raw_name: &str) -> bool {
    let name: String = url::form_urlencoded::parse(raw_name.as_bytes())
        .next()
        .map(|(name, _)| name.to_ascii_lowercase())
        .unwrap_or_default();
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// `Debug` for a header map that prints sensitive values as `<redacted>`.
pub(crate) struct Headers<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name) || value.is_sensitive() {
                map.entry(&name.as_str(), &REDACTED);
            } else {
                map.entry(&name.as_str(), &value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_userinfo_is_hidden() {
        for (raw, shown) in [
            ("http://user:hunter2@host/x", "http://***@host/x"),
            ("http://ghp_TOKEN@host/x", "http://***@host/x"),
            ("http://sk_live_KEY:@host/x", "http://***@host/x"),
            ("ht!tp://user:hunter2@host", "ht!tp://***@host"),
            ("http://a@b@host/p@q", "http://***@host/p@q"),
            ("http://host/path@x", "http://host/path@x"),
        ] {
            assert_eq!(url_str(raw), shown, "{raw}");
        }
        let parsed = Url::parse("http://sk_live_KEY:@host/x").unwrap();
        assert_eq!(url(&parsed), "http://***@host/x");
    }

    #[test]
    fn secret_query_values_are_hidden_and_the_rest_is_kept() {
        for (raw, shown) in [
            (
                "/x?access_token=t&page=2&API_KEY=k",
                "/x?access_token=***&page=2&API_KEY=***",
            ),
            (
                "/x?github_token=t&keyword=k",
                "/x?github_token=***&keyword=k",
            ),
            ("/x?%74oken=t", "/x?%74oken=***"),
            ("/cb#access_token=t&state=s", "/cb#access_token=***&state=s"),
            ("/x?flag&sig=s", "/x?flag&sig=***"),
            ("/plain", "/plain"),
        ] {
            assert_eq!(url_str(raw), shown, "{raw}");
        }
    }

    #[test]
    fn sensitive_header_values_are_hidden() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        headers.insert(COOKIE, "session=s3cret".parse().unwrap());
        headers.insert("x-trace", "visible".parse().unwrap());
        let mut marked: reqwest::header::HeaderValue = "s3cret".parse().unwrap();
        marked.set_sensitive(true);
        headers.insert("x-api-token", marked);
        let shown = format!("{:?}", Headers(&headers));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("visible"), "{shown}");
    }
}
