//! The status page served at `/`: how to pull from this host, what the
//! server is configured with (never secrets), its version, and the most
//! recent build errors.
//!
//! Rendering is a pure function of [`StatusPage`]; every interpolated value
//! goes through [`escape_html`], so a package name or a Nix error containing
//! markup is shown as text and never executed.

use std::fmt::Write as _;

/// The version of this build: the git commit it was built from, or `devel`.
pub const VERSION: &str = match option_env!("NIXERY_VERSION") {
    Some(version) => version,
    None => "devel",
};

/// The page's stylesheet, embedded in the binary.
const STYLE: &str = include_str!("status.css");

/// One recent build failure, as shown on the page.
#[derive(Clone, Debug)]
pub struct RecentError {
    /// The image whose build failed (display name and tag).
    pub image: String,
    /// When it failed, already formatted (UTC).
    pub at: String,
    /// What went wrong (tail of Nix's output or an error message).
    pub message: String,
}

/// Everything the status page shows.
#[derive(Clone, Debug)]
pub struct StatusPage {
    /// The host clients use to reach this registry (from the `Host` header).
    pub host: String,
    /// Human description of the package source (no credentials).
    pub package_source: String,
    /// Storage backend name.
    pub storage_backend: String,
    /// Meta-packages understood in image names, with what they mean.
    pub meta_packages: Vec<(String, String)>,
    /// Recent build errors, newest first.
    pub recent_errors: Vec<RecentError>,
}

/// Replace the characters that are markup in HTML text and attributes.
///
/// Written here rather than taken from a crate: five replacements are the
/// whole job and this keeps the page free of a templating dependency.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl StatusPage {
    /// Render the page as a complete HTML document.
    pub fn render(&self) -> String {
        let host = escape_html(&self.host);
        let mut html = String::new();
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>nixery-rs at {host}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <h1>nixery-rs</h1>\n\
             <p>A container registry that builds images on demand with Nix. \
             Name the packages you want in the image path:</p>\n\
             <pre id=\"pull\">docker pull {host}/shell/git/htop\n\
             podman pull {host}/hello\n\
             skopeo copy docker://{host}/hello/git oci:hello-git:latest</pre>\n"
        );
        html.push_str("<h2>Meta-packages</h2>\n<dl>\n");
        for (name, meaning) in &self.meta_packages {
            let _ = writeln!(
                html,
                "<dt><code>{}</code></dt><dd>{}</dd>",
                escape_html(name),
                escape_html(meaning)
            );
        }
        html.push_str("</dl>\n");
        let _ = write!(
            html,
            "<h2>This instance</h2>\n<table>\n\
             <tr><th>Package source</th><td>{}</td></tr>\n\
             <tr><th>Storage backend</th><td>{}</td></tr>\n\
             <tr><th>Version</th><td id=\"version\">{}</td></tr>\n</table>\n",
            escape_html(&self.package_source),
            escape_html(&self.storage_backend),
            escape_html(VERSION)
        );
        html.push_str("<h2>Recent build errors</h2>\n");
        if self.recent_errors.is_empty() {
            html.push_str("<p id=\"no-errors\">No build has failed recently.</p>\n");
        } else {
            html.push_str("<ol id=\"errors\">\n");
            for error in &self.recent_errors {
                let _ = writeln!(
                    html,
                    "<li><p><code>{}</code> at {}</p><pre>{}</pre></li>",
                    escape_html(&error.image),
                    escape_html(&error.at),
                    escape_html(&error.message)
                );
            }
            html.push_str("</ol>\n");
        }
        html.push_str("</body>\n</html>\n");
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_with_error(image: &str, message: &str) -> StatusPage {
        StatusPage {
            host: "registry.example:8080".into(),
            package_source: "offline package set".into(),
            storage_backend: "filesystem".into(),
            meta_packages: vec![("shell".into(), "bash, coreutils".into())],
            recent_errors: vec![RecentError {
                image: image.into(),
                at: "2026-11-26 10:00:00 UTC".into(),
                message: message.into(),
            }],
        }
    }

    #[test]
    fn hostile_strings_are_escaped_everywhere() {
        let mut page = page_with_error(
            "<script>alert(1)</script>/git:latest",
            "error: <img src=x onerror=alert(2)> & \"quoted\" 'single'",
        );
        page.host = "<b>host</b>".into();
        let html = page.render();
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>host"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains(
            "&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quoted&quot; &#39;single&#39;"
        ));
    }

    #[test]
    fn page_shows_pull_commands_for_the_request_host() {
        let html = page_with_error("hello", "boom").render();
        assert!(html.contains("docker pull registry.example:8080/shell/git/htop"));
        assert!(html.contains("<td>filesystem</td>"));
        assert!(html.contains(VERSION));
    }

    #[test]
    fn empty_error_list_says_so() {
        let mut page = page_with_error("x", "y");
        page.recent_errors.clear();
        assert!(page.render().contains("No build has failed recently."));
    }
}
