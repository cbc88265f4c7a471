//! The one redaction rule for text that may carry credentials: every URL
//! (`scheme://...`) in it loses the values of its user information, query
//! string and fragment. It applies to anything shown to a client, on the
//! status page or in the logs that can contain a URL or another program's
//! error output (git and Nix echo the URLs they fail on).
//!
//! `https://user:token@host/p?access_token=abc&x` becomes
//! `https://***@host/p?access_token=***&x=***`: the shape stays readable,
//! the secrets do not.

use crate::source::PackageSource;

/// What replaces a secret.
pub const MASK: &str = "***";

/// `text` with the user information and the query and fragment values of
/// every URL in it replaced by [`MASK`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let url_end = at + 3 + rest[at + 3..].find(ends_url).unwrap_or(rest.len() - at - 3);
        out.push_str(&rest[..at + 3]);
        out.push_str(&redact_after_scheme(&rest[at + 3..url_end]));
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    out
}

/// Characters that end a URL embedded in text (URLs are ASCII; quotes of
/// any kind, spaces and control characters delimit them).
fn ends_url(c: char) -> bool {
    !c.is_ascii()
        || c.is_ascii_whitespace()
        || c.is_ascii_control()
        || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '\\')
}

/// Redacts `authority/path?query#fragment` (the part after `://`).
fn redact_after_scheme(url: &str) -> String {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, tail) = url.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str(MASK);
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&mask_values(query));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&mask_values(fragment));
    }
    out
}

/// `a=1&b&c=` becomes `a=***&b=***&c=`: every non-empty value, and every
/// bare item (which may itself be a token), is masked.
fn mask_values(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, "")) => format!("{name}="),
            Some((name, _)) => format!("{name}={MASK}"),
            None if pair.is_empty() => String::new(),
            None => format!("{pair}={MASK}"),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The credentials in a git source's URL: its user information and, on
/// its own, the password in it (longest first, so both are caught).
pub fn source_secrets(source: &PackageSource) -> Vec<String> {
    let PackageSource::Git(url) = source else {
        return Vec::new();
    };
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@').filter(|(u, _)| !u.is_empty()) else {
        return Vec::new();
    };
    let mut secrets = vec![userinfo.to_owned()];
    if let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        secrets.push(password.to_owned());
    }
    secrets
}

/// `url` without user information (`user:password@`), query and fragment.
///
/// Hand-written rather than with the `url` crate, which rejects the
/// scp-like `user@host:path` form git also accepts.
pub fn without_credentials(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or_default();
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// `text` with every one of `secrets` replaced by [`MASK`] (for secrets
/// known in advance, such as those of [`source_secrets`], that are not
/// part of a URL in `text`).
pub fn without_secrets(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |text, secret| text.replace(secret, MASK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_masked() {
        assert_eq!(
            redact("cloning https://alice:s3cret@git.example/repo.git failed"),
            "cloning https://***@git.example/repo.git failed"
        );
        assert_eq!(
            redact("https://ghp_token@github.com/x"),
            "https://***@github.com/x"
        );
    }

    #[test]
    fn query_and_fragment_values_are_masked() {
        assert_eq!(
            redact(
                "fatal: unable to access 'https://git.example/r.git?private_token=abc&ref=main': 403"
            ),
            "fatal: unable to access 'https://git.example/r.git?private_token=***&ref=***': 403"
        );
        assert_eq!(
            redact("see http://h/p?tok#access_token=xyz"),
            "see http://h/p?tok=***#access_token=***"
        );
        assert_eq!(redact("http://h/p?a=&&b=1"), "http://h/p?a=&&b=***");
    }

    #[test]
    fn text_without_urls_is_unchanged() {
        for text in [
            "",
            "plain error: no such file",
            "path /nix/store/abc-x?y=1",
            "héllo wörld",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn several_urls_and_unicode_around_them_are_handled() {
        assert_eq!(
            redact("«git+ssh://u@h/r?k=v» and “https://x/y?t=1”"),
            "«git+ssh://***@h/r?k=***» and “https://x/y?t=***”"
        );
    }

    #[test]
    fn urls_inside_json_strings_keep_the_json_valid() {
        let line = serde_json::json!({"error": "GET \"https://u:p@h/x?t=1\" failed"}).to_string();
        let redacted = redact(&line);
        let parsed: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(parsed["error"], "GET \"https://***@h/x?t=***\" failed");
    }

    #[test]
    fn no_secret_survives_in_arbitrary_urls() {
        for (url, secret) in [
            ("https://user:pw@h:8080/p", "pw"),
            ("s3://k@bucket/x", "k@"),
            ("https://h/p?sig=SECRET123", "SECRET123"),
            ("https://h?X-Goog-Signature=abcdef", "abcdef"),
        ] {
            assert!(!redact(url).contains(secret), "{url}");
        }
    }

    #[test]
    fn git_urls_lose_user_password_query_and_fragment() {
        assert_eq!(
            without_credentials("https://user:secret@git.example/pkgs.git"),
            "https://git.example/pkgs.git"
        );
        assert_eq!(
            without_credentials("https://token@git.example:8443/a/b?private_token=x#frag"),
            "https://git.example:8443/a/b"
        );
        assert_eq!(
            without_credentials("git@github.com:org/pkgs.git"),
            "github.com:org/pkgs.git"
        );
        assert_eq!(
            without_credentials("file:///srv/repos/a@b"),
            "file:///srv/repos/a@b"
        );
        assert_eq!(
            without_credentials("https://git.example/pkgs"),
            "https://git.example/pkgs"
        );
    }
}
