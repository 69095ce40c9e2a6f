//! Keeping secrets out of `Debug` output, `Display` messages and tracing fields.

use std::fmt;

use reqwest::header::{
    HeaderMap, HeaderName, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE,
};
use reqwest::Url;

/// Placeholder printed where a secret was.
pub(crate) const REDACTED: &str = "<redacted>";

/// Headers whose values are credentials and are never printed.
pub(crate) fn is_sensitive(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE || name == SET_COOKIE
}

/// The URL with any password replaced, safe to print.
pub(crate) fn url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        // Setting a password only fails for URLs that cannot have one, which
        // is not the case when one is present.
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else {
        url.to_string()
    }
}

/// Redacts a URL given as text; text that is not a URL is printed as is,
/// except that a `user:password@` part is still hidden.
pub(crate) fn url_str(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(parsed) => url(&parsed),
        Err(_) => match (raw.find("://"), raw.find('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://***@{}", &raw[..scheme_end], &raw[at + 1..])
            }
            _ => raw.to_owned(),
        },
    }
}

/// `Debug` for a header map that prints sensitive values as `<redacted>`.
pub(crate) struct Headers<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name) {
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
    fn url_password_is_hidden() {
        let shown = url(&Url::parse("http://user:hunter2@host/x").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user:***@host"), "{shown}");
        assert!(!url_str("ht!tp://user:hunter2@host").contains("hunter2"));
    }

    #[test]
    fn sensitive_header_values_are_hidden() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        headers.insert(COOKIE, "session=s3cret".parse().unwrap());
        headers.insert("x-trace", "visible".parse().unwrap());
        let shown = format!("{:?}", Headers(&headers));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("visible"), "{shown}");
    }
}
