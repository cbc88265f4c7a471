//! The status page served at `/`: how to pull from this host, what the
//! server is configured with (never secrets), its version, and the most
//! recent build errors.
//!
//! Rendering is a pure function of [`StatusPage`]; every interpolated value
//! goes through [`escape_html`], so a package name or a Nix error containing
//! markup is shown as text and never executed.

use std::{fmt::Write as _, time::SystemTime};

use crate::{
    build_errors::BuildErrorEntry,
    image::SHELL_PACKAGES,
    redact::{self, source_secrets, without_credentials},
    source::PackageSource,
};

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
    /// Which step failed.
    pub kind: String,
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
    /// What garbage collection does on this instance (redacted when the
    /// page is rendered).
    pub collection: String,
    /// Who may pull (pull authentication), in words.
    pub authentication: String,
    /// Whether the build errors are withheld (pull authentication is on
    /// and the request proved no user): they name images users built.
    pub errors_hidden: bool,
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
             <tr><th>Garbage collection</th><td id=\"gc\">{}</td></tr>\n\
             <tr><th>Pull authentication</th><td id=\"auth\">{}</td></tr>\n\
             <tr><th>Version</th><td id=\"version\">{}</td></tr>\n</table>\n",
            escape_html(&self.package_source),
            escape_html(&self.storage_backend),
            // A failed collection's error may quote a storage URL.
            escape_html(&redact::redact(&self.collection)),
            escape_html(&self.authentication),
            escape_html(VERSION)
        );
        html.push_str("<h2>Recent build errors</h2>\n");
        if self.errors_hidden {
            html.push_str(
                "<p id=\"errors-hidden\">Shown to users who send their credentials.</p>\n",
            );
        } else if self.recent_errors.is_empty() {
            html.push_str("<p id=\"no-errors\">No build has failed recently.</p>\n");
        } else {
            html.push_str("<ol id=\"errors\">\n");
            for error in &self.recent_errors {
                let _ = writeln!(
                    html,
                    "<li><p><code>{}</code> ({} failure) at {}</p><pre>{}</pre></li>",
                    escape_html(&error.image),
                    escape_html(&error.kind),
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

/// The parts of the status page fixed at start-up: everything but the
/// request's host and the build errors. Built once and shared by requests.
#[derive(Clone, Debug)]
pub struct StatusInfo {
    /// Host shown when a request names none (the address the server
    /// listens on).
    pub fallback_host: String,
    /// Human description of the package source (no credentials).
    pub package_source: String,
    /// Storage backend name.
    pub storage_backend: String,
    /// Meta-packages understood in image names, with what they mean.
    pub meta_packages: Vec<(String, String)>,
    /// Credentials of the package source, replaced by `***` wherever they
    /// appear in a build error.
    pub secrets: Vec<String>,
}

impl StatusInfo {
    /// Status information for a server building from `source` and storing
    /// in the backend named `storage_backend`.
    pub fn for_source(source: &PackageSource, storage_backend: &str) -> StatusInfo {
        StatusInfo {
            secrets: source_secrets(source),
            ..StatusInfo::new(describe_source(source), storage_backend)
        }
    }

    /// Status information for a server using `package_source` (already
    /// described, see [`describe_source`]) and the storage backend named
    /// `storage_backend`.
    pub fn new(package_source: String, storage_backend: &str) -> StatusInfo {
        StatusInfo {
            fallback_host: "localhost".to_owned(),
            package_source,
            storage_backend: storage_backend.to_owned(),
            meta_packages: meta_packages(),
            secrets: Vec::new(),
        }
    }

    /// The page for a request that named `host` (if any), listing `errors`
    /// in the order given (the ring keeps them newest first).
    pub fn page(&self, host: Option<&str>, errors: &[BuildErrorEntry]) -> StatusPage {
        let host = host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.fallback_host);
        StatusPage {
            host: host.to_owned(),
            package_source: self.package_source.clone(),
            storage_backend: self.storage_backend.clone(),
            meta_packages: self.meta_packages.clone(),
            collection: "periodic collection off".to_owned(),
            authentication: "off: anyone may pull and build".to_owned(),
            errors_hidden: false,
            recent_errors: errors
                .iter()
                .map(|e| RecentError {
                    image: e.image.clone(),
                    at: format_utc(e.at),
                    kind: e.kind.to_string(),
                    message: redact::without_secrets(&redact::redact(&e.message), &self.secrets),
                })
                .collect(),
        }
    }
}

/// The meta-packages of image names and what each one means.
pub fn meta_packages() -> Vec<(String, String)> {
    vec![
        (
            "shell".to_owned(),
            format!(
                "adds an interactive shell environment: {}",
                SHELL_PACKAGES.join(", ")
            ),
        ),
        (
            "arm64".to_owned(),
            "builds the image for 64-bit ARM (aarch64-linux) instead of x86_64-linux; \
             it adds no package"
                .to_owned(),
        ),
        (
            "nonroot".to_owned(),
            format!(
                "runs the image as the user nonroot (User {0}:{0}), with a home it owns; \
                 it adds no package",
                crate::image::NONROOT_UID
            ),
        ),
        (
            "user-<uid>".to_owned(),
            format!(
                "runs the image as the user with that uid (1 to {}, group the same) \
                 and a home it owns: user-1000; it adds no package",
                crate::image::MAX_UID
            ),
        ),
    ]
}

/// Describe where packages come from, for people, without credentials: a
/// git URL loses any user name, password, query and fragment.
pub fn describe_source(source: &PackageSource) -> String {
    match source {
        PackageSource::Channel(channel) => format!("nixpkgs channel {channel}"),
        PackageSource::Git(url) => format!("git repository {}", without_credentials(url)),
        PackageSource::Path(path) => format!("local package set at {}", path.display()),
        PackageSource::Builtin => "built-in offline package set".to_owned(),
    }
}

/// `at` as `YYYY-MM-DD HH:MM:SS UTC` (times before 1970 show as 1970).
pub fn format_utc(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at.max(SystemTime::UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::build_errors::FailureKind;

    #[test]
    fn utc_time_is_formatted_as_date_and_time() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(format_utc(at(0)), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 (a leap day in a year divisible by 400) 12:34:56.
        assert_eq!(format_utc(at(951_827_696)), "2000-02-29 12:34:56 UTC");
        assert_eq!(format_utc(at(1_709_251_199)), "2024-02-29 23:59:59 UTC");
        assert_eq!(format_utc(at(1_798_761_600)), "2027-01-01 00:00:00 UTC");
        assert_eq!(
            format_utc(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01 00:00:00 UTC"
        );
    }

    #[test]
    fn each_package_source_is_described_without_secrets() {
        let git = describe_source(&PackageSource::Git(
            "https://alice:hunter2@git.example/nixpkgs.git".into(),
        ));
        assert_eq!(git, "git repository https://git.example/nixpkgs.git");
        assert_eq!(
            describe_source(&PackageSource::Channel("nixos-unstable".into())),
            "nixpkgs channel nixos-unstable"
        );
        assert_eq!(
            describe_source(&PackageSource::Path("/srv/pkgs".into())),
            "local package set at /srv/pkgs"
        );
        assert_eq!(
            describe_source(&PackageSource::Builtin),
            "built-in offline package set"
        );
    }

    #[test]
    fn git_credentials_in_build_errors_are_redacted() {
        let source = PackageSource::Git("https://alice:hunter2@git.example/p.git".into());
        let info = StatusInfo::for_source(&source, "filesystem");
        assert_eq!(
            info.package_source,
            "git repository https://git.example/p.git"
        );
        let error = BuildErrorEntry {
            image: "hello:latest".into(),
            message: "fetching 'https://alice:hunter2@git.example/p.git'; password hunter2".into(),
            at: SystemTime::UNIX_EPOCH,
            kind: FailureKind::Nix,
        };
        let page = info.page(None, &[error]);
        assert_eq!(
            page.recent_errors[0].message,
            "fetching 'https://***@git.example/p.git'; password ***"
        );
        for source in [
            PackageSource::Builtin,
            PackageSource::Git("https://@git.example/p.git".into()),
        ] {
            assert!(StatusInfo::for_source(&source, "x").secrets.is_empty());
        }
    }

    #[test]
    fn page_uses_the_request_host_or_the_fallback_and_keeps_error_order() {
        let mut info = StatusInfo::new("built-in offline package set".into(), "filesystem");
        info.fallback_host = "0.0.0.0:8080".into();
        let errors = [
            BuildErrorEntry {
                image: "new:latest".into(),
                message: "second".into(),
                at: SystemTime::UNIX_EPOCH,
                kind: FailureKind::Nix,
            },
            BuildErrorEntry {
                image: "old:latest".into(),
                message: "first".into(),
                at: SystemTime::UNIX_EPOCH,
                kind: FailureKind::Nix,
            },
        ];
        let page = info.page(Some("registry.example"), &errors);
        assert_eq!(page.host, "registry.example");
        let images: Vec<_> = page.recent_errors.iter().map(|e| &e.image).collect();
        assert_eq!(images, ["new:latest", "old:latest"]);
        assert_eq!(page.recent_errors[0].at, "1970-01-01 00:00:00 UTC");
        assert_eq!(info.page(None, &[]).host, "0.0.0.0:8080");
        assert_eq!(info.page(Some(" "), &[]).host, "0.0.0.0:8080");
    }

    #[test]
    fn meta_packages_name_the_shell_packages_and_arm64() {
        let meta = meta_packages();
        assert_eq!(meta[0].0, "shell");
        for package in SHELL_PACKAGES {
            assert!(meta[0].1.contains(package), "{package}");
        }
        assert_eq!(meta[1].0, "arm64");
        assert!(meta[1].1.contains("aarch64-linux"));
    }

    fn page_with_error(image: &str, message: &str) -> StatusPage {
        StatusPage {
            host: "registry.example:8080".into(),
            package_source: "offline package set".into(),
            storage_backend: "filesystem".into(),
            meta_packages: vec![("shell".into(), "bash, coreutils".into())],
            recent_errors: vec![RecentError {
                image: image.into(),
                at: "2026-11-26 10:00:00 UTC".into(),
                kind: "nix".into(),
                message: message.into(),
            }],
            collection: "every 1day".into(),
            authentication: "off".into(),
            errors_hidden: false,
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
