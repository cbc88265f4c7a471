//! The most recent build errors, for the status page. Messages are
//! redacted ([`crate::redact`]) when recorded.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::SystemTime;

/// How many build errors are kept.
pub const CAPACITY: usize = 15;

/// One failed build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildErrorEntry {
    /// The image that failed (`name:tag`).
    pub image: String,
    /// Which step failed (`nix`, `packages`, `layers`, `storage`, `crash`).
    pub kind: String,
    /// What went wrong (the tail of Nix's output).
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

    /// Record that the Nix step of `image` failed with `message`.
    pub fn record(&self, image: &str, message: &str) {
        self.record_kind(image, "nix", message);
    }

    /// Record that building `image` failed in step `kind` with `message`.
    pub fn record_kind(&self, image: &str, kind: &str, message: &str) {
        let entry = BuildErrorEntry {
            image: image.to_string(),
            kind: kind.to_string(),
            message: crate::redact::redact(message),
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
        errors.record("a:latest", "one");
        errors.record("b:latest", "two");
        assert_eq!(images(&errors), ["b:latest", "a:latest"]);
        assert_eq!(errors.recent()[0].message, "two");
    }

    #[test]
    fn an_image_appears_once_with_its_latest_error() {
        let errors = BuildErrors::new();
        errors.record("a:latest", "first");
        errors.record("b:latest", "other");
        errors.record("a:latest", "second");
        assert_eq!(images(&errors), ["a:latest", "b:latest"]);
        assert_eq!(errors.recent()[0].message, "second");
    }

    #[test]
    fn ring_keeps_only_the_most_recent_fifteen() {
        let errors = BuildErrors::new();
        for i in 0..20 {
            errors.record(&format!("image{i}:latest"), "failed");
        }
        let kept = images(&errors);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0], "image19:latest");
        assert_eq!(kept[CAPACITY - 1], "image5:latest");
    }

    #[test]
    fn kinds_are_kept_and_urls_in_messages_are_redacted() {
        let errors = BuildErrors::new();
        errors.record_kind(
            "a:latest",
            "storage",
            "upload to https://u:pw@h/b?token=abc failed",
        );
        errors.record("b:latest", "nix says no");
        let recent = errors.recent();
        assert_eq!(recent[0].kind, "nix");
        assert_eq!(recent[1].kind, "storage");
        assert_eq!(
            recent[1].message,
            "upload to https://***@h/b?token=*** failed"
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
                        errors.record(&format!("t{t}-{i}"), "failed");
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
