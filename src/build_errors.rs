//! The most recent build errors, for the status page, each with the kind
//! of step that failed. The builder is the only writer. Messages are kept
//! as they are; the status page redacts them when it shows them
//! ([`crate::redact`]).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::SystemTime;

/// How many build errors are kept.
pub const CAPACITY: usize = 15;

/// The step of a build that failed, as the status page names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The package source could not be resolved for the tag.
    Source,
    /// The package set refused some requested packages.
    Packages,
    /// The Nix step failed or timed out.
    Nix,
    /// Grouping or packing the layers, or assembling the manifest, failed.
    Layers,
    /// Storing a layer, the config or the manifest failed.
    Storage,
    /// Looking up the caches failed.
    StorageLookup,
    /// The build queue was full.
    Queue,
    /// The build task stopped without a result.
    Crash,
    /// No builder is available.
    Unavailable,
    /// One platform's image failed, and the image index was served
    /// without it.
    Platform,
}

impl FailureKind {
    /// The name shown on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Source => "source",
            FailureKind::Packages => "packages",
            FailureKind::Nix => "nix",
            FailureKind::Layers => "layers",
            FailureKind::Storage => "storage",
            FailureKind::StorageLookup => "storage lookup",
            FailureKind::Queue => "queue",
            FailureKind::Crash => "crash",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Platform => "platform",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildErrorEntry {
    /// The image that failed (`name:tag`).
    pub image: String,
    /// Which step failed.
    pub kind: FailureKind,
    /// What went wrong (with the tail of Nix's output for a Nix failure),
    /// not yet redacted.
    pub message: String,
    /// When it was recorded.
    pub at: SystemTime,
}

/// A bounded, thread-safe ring of recent build errors: at most
/// [`CAPACITY`] entries, one per image (a new error for an image replaces
/// its old one), newest first.
#[derive(Debug, Default)]
pub struct BuildErrors {
    entries: Mutex<VecDeque<BuildErrorEntry>>,
}

impl BuildErrors {
    /// An empty ring.
    pub fn new() -> BuildErrors {
        BuildErrors::default()
    }

    /// Record that building `image` failed in step `kind` with `message`.
    pub fn record(&self, image: &str, kind: FailureKind, message: &str) {
        let entry = BuildErrorEntry {
            image: image.to_string(),
            kind,
            message: message.to_string(),
            at: SystemTime::now(),
        };
        let mut entries = self.entries.lock();
        entries.retain(|e| e.image != image);
        entries.push_front(entry);
        entries.truncate(CAPACITY);
    }

    /// The recorded errors, newest first.
    pub fn recent(&self) -> Vec<BuildErrorEntry> {
        let entries = self.entries.lock();
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(errors: &BuildErrors) -> Vec<String> {
        errors.recent().into_iter().map(|e| e.image).collect()
    }

    #[test]
    fn newest_error_comes_first() {
        let errors = BuildErrors::new();
        errors.record("a:latest", FailureKind::Nix, "one");
        errors.record("b:latest", FailureKind::Nix, "two");
        assert_eq!(images(&errors), ["b:latest", "a:latest"]);
        assert_eq!(errors.recent()[0].message, "two");
    }

    #[test]
    fn an_image_appears_once_with_its_latest_error() {
        let errors = BuildErrors::new();
        errors.record("a:latest", FailureKind::Nix, "first");
        errors.record("b:latest", FailureKind::Nix, "other");
        errors.record("a:latest", FailureKind::Nix, "second");
        assert_eq!(images(&errors), ["a:latest", "b:latest"]);
        assert_eq!(errors.recent()[0].message, "second");
    }

    #[test]
    fn ring_keeps_only_the_most_recent_fifteen() {
        let errors = BuildErrors::new();
        for i in 0..20 {
            errors.record(&format!("image{i}:latest"), FailureKind::Nix, "failed");
        }
        let kept = images(&errors);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0], "image19:latest");
        assert_eq!(kept[CAPACITY - 1], "image5:latest");
    }

    #[test]
    fn kinds_and_messages_are_kept_as_recorded() {
        let errors = BuildErrors::new();
        errors.record(
            "a:latest",
            FailureKind::Storage,
            "upload to https://u:pw@h/b?token=abc failed",
        );
        errors.record("b:latest", FailureKind::Nix, "nix says no");
        let recent = errors.recent();
        assert_eq!(recent[0].kind.as_str(), "nix");
        assert_eq!(recent[1].kind.as_str(), "storage");
        // Redacted by the status page when shown, not here.
        assert_eq!(
            recent[1].message,
            "upload to https://u:pw@h/b?token=abc failed"
        );
    }

    #[test]
    fn recording_from_many_threads_is_safe() {
        let errors = std::sync::Arc::new(BuildErrors::new());
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let errors = errors.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        errors.record(&format!("t{t}-{i}"), FailureKind::Nix, "failed");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(errors.recent().len(), CAPACITY);
    }
}
